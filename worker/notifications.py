"""The notification channel the worker's settings choose, built here so that
``activities/channels.py`` takes plain arguments and never reads the process settings (the
layering of every other side effect: the worker builds, activities receive)."""

from __future__ import annotations

from activities.channels import Channel, FileChannel, SmtpChannel
from worker.settings import Settings


def build_channel(settings: Settings) -> Channel:
    """The channel the settings choose: ``file`` (default, ``settings.outbox_file``) or ``smtp``.

    Raises:
        ValueError: ``smtp`` is chosen but ``SMTP_HOST`` is not set.
    """
    if settings.notification_channel == "smtp":
        if not settings.smtp_host:
            raise ValueError("NOTIFICATION_CHANNEL=smtp needs SMTP_HOST")
        password = settings.smtp_password
        return SmtpChannel(
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_user,
            password.get_secret_value() if password is not None else None,
            settings.smtp_sender,
        )
    return FileChannel(settings.outbox_file)
