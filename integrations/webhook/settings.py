"""`[integrations.webhook]`: each source's authentication, and the mappings of the generic JSON sources."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from integrations.webhook.auth import SourceAuth
from integrations.webhook.generic import SOURCE_NAME, GenericSource


class WebhookConfig(BaseModel):
    """`[integrations.webhook]` in the config."""

    model_config = ConfigDict(extra="forbid")
    alertmanager: SourceAuth = Field(default_factory=SourceAuth)
    grafana: SourceAuth = Field(default_factory=SourceAuth)
    # `[integrations.webhook.generic.<name>]`: POST /hooks/generic/<name>, read through that mapping.
    generic: dict[str, GenericSource] = Field(default_factory=dict)
    # With no bearer token or secret for a source, accept posts from this machine only.
    allow_unauthenticated_loopback: bool = True

    @field_validator("generic")
    @classmethod
    def _names(cls, sources: dict[str, GenericSource]) -> dict[str, GenericSource]:
        for name in sources:
            if not SOURCE_NAME.fullmatch(name):
                raise ValueError(f"{name!r} cannot be a source name (in /hooks/generic/<name>): use lowercase "
                                 "letters, digits, '-' and '_', starting with a letter or digit")
        return sources
