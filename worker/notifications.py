"""The notification channel the worker's settings choose, built here so that
``activities/channels.py`` takes plain arguments and never reads the process settings (the
layering of every other side effect: the worker builds, activities receive)."""

from __future__ import annotations

from activities.channels import Channel, FileChannel, RoutingChannel, SmsChannel, SmtpChannel
from worker.settings import Settings


def build_channel(settings: Settings) -> Channel:
    """The channel the settings choose: ``file`` (default, ``settings.outbox_file``) or ``smtp``,
    with SMS through the provider when ``SMS_ACCOUNT_SID`` is set (docs/messaging.md).

    Raises:
        ValueError: ``smtp`` is chosen but ``SMTP_HOST`` is not set, or the SMS provider lacks
            its token or sender.
    """
    if settings.notification_channel == "smtp":
        if not settings.smtp_host:
            raise ValueError("NOTIFICATION_CHANNEL=smtp needs SMTP_HOST")
        password = settings.smtp_password
        email = SmtpChannel(
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_user,
            password.get_secret_value() if password is not None else None,
            settings.smtp_sender,
        )
        return RoutingChannel(email, build_sms_channel(settings))
    return FileChannel(settings.outbox_file)


def build_sms_channel(settings: Settings) -> SmsChannel | None:
    """The SMS provider's channel, or None when ``SMS_ACCOUNT_SID`` is not set."""
    if not settings.sms_account_sid:
        return None
    if settings.sms_auth_token is None or not settings.sms_sender:
        raise ValueError("SMS_ACCOUNT_SID needs SMS_AUTH_TOKEN and SMS_SENDER")
    return SmsChannel(
        settings.sms_base_url,
        settings.sms_account_sid,
        settings.sms_auth_token.get_secret_value(),
        settings.sms_sender,
        status_callback=settings.sms_status_callback_url,
    )
