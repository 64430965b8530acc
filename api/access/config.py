"""Staff access settings (issue 16): the OpenID Connect provider, how its groups map to our
roles and clinics, and whether the pasted-token login is on.

Read from the environment (or ``.env``) with the ``JOURNEY_`` prefix, beside
``worker.settings.Settings``; ``create_app`` keeps them in ``app.state.access`` (tests set
their own there before serving).

* ``JOURNEY_OIDC_ISSUER``, ``JOURNEY_OIDC_CLIENT_ID``, ``JOURNEY_OIDC_CLIENT_SECRET``: the
  provider (its ``/.well-known/openid-configuration`` is read at the first sign-in).
* ``JOURNEY_OIDC_GROUPS_CLAIM`` (default ``groups``; Entra ID ``roles``, Keycloak a mapper to
  ``groups``) and ``JOURNEY_OIDC_GROUP_MAP``, JSON: ``{"<group>": {"role": "reception",
  "clinics": ["hamburg"]}}``; ``clinics`` omitted or null is every clinic. A member in several
  groups gets the clinics of all of them and the first role of admin, clinician, manager,
  reception that one of them grants. No mapped group: sign-in refused.
* ``JOURNEY_TOKEN_LOGIN``: the pasted staff token on the sign-in page and staff users' own
  bearer tokens (``journey staff add``) on the API: on by default except in production, where
  it is the break-glass path an operator turns on for an incident.
"""

from __future__ import annotations

from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from api.access.permissions import Role

__all__ = ["AccessSettings", "GroupGrant"]

_PRECEDENCE: tuple[Role, ...] = ("admin", "clinician", "manager", "reception")


class GroupGrant(BaseModel):
    """What one provider group grants: a role and its clinics (None: every clinic)."""

    role: Role
    clinics: list[str] | None = None


class AccessSettings(BaseSettings):
    """See the module docstring."""

    model_config = SettingsConfigDict(env_prefix="JOURNEY_", env_file=".env", extra="ignore")

    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_scopes: str = "openid profile email"
    oidc_groups_claim: str = "groups"
    oidc_group_map: dict[str, GroupGrant] = {}
    oidc_provider_name: str = "your organisation's sign-in"
    token_login: bool | None = None

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_issuer and self.oidc_client_id)

    def token_login_enabled(self, journey_env: str) -> bool:
        """The pasted-token login: explicit setting, else everywhere but production."""
        if self.token_login is not None:
            return self.token_login
        return journey_env != "production"

    def grant_for(self, groups: list[str]) -> GroupGrant | None:
        """The role and clinics the member's ``groups`` grant, or None (refused)."""
        grants = [self.oidc_group_map[g] for g in groups if g in self.oidc_group_map]
        if not grants:
            return None
        role = next(r for r in _PRECEDENCE if any(g.role == r for g in grants))
        clinics: list[str] | None = []
        for g in grants:
            if g.clinics is None:
                clinics = None
                break
            assert clinics is not None
            clinics.extend(c for c in g.clinics if c not in clinics)
        return GroupGrant(role=role, clinics=clinics)
