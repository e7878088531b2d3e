"""Server settings, from environment variables (``ANTIOOM_*``) and a ``.env`` file."""

from __future__ import annotations

import re

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from antioom.api import DEFAULT_DB
from antioom.errors import ConfigError

KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ANTIOOM_", env_file=".env", extra="ignore", populate_by_name=True
    )

    db_url: str = DEFAULT_DB
    datasets: str | None = Field(default=None, description="datasets TOML file")
    api_keys: str = Field(
        default="",
        validation_alias=AliasChoices("ANTIOOM_API_KEYS", "API_KEY", "api_keys"),
        description="comma-separated bearer tokens, each optionally named (`name:token`; a "
        "plain token is named key1, key2… by its position); API_KEY (the seed's name) works too",
    )
    max_upload_bytes: int = 1 << 30
    max_decompressed_bytes: int = Field(
        default_factory=lambda data: min(100 * data["max_upload_bytes"], 100 << 30),
        description="largest gzip/zstd upload once decompressed (default: 100x "
        "max_upload_bytes, at most 100 GiB): a compression bomb fails with 413",
    )
    max_header_bytes: int = Field(
        default=64 << 10, gt=0, description="largest HTTP request head (request line, headers)"
    )
    body_idle_timeout_s: float = Field(
        default=30.0, gt=0, description="an upload that sends nothing for this long fails (408)"
    )
    max_concurrent_imports: int = 4
    rate_limit_per_minute: int = 100
    public_reads: bool = Field(default=False, description="with API keys: reads need no key")
    auth_failures_per_minute: int = Field(
        default=10, description="failed authentications per client before a 429 (0: no limit)"
    )
    trusted_proxies: str = Field(
        default="", description="comma-separated IPs/CIDRs whose X-Forwarded-For is believed"
    )
    allowed_origins: str = Field(
        default="", description="without API keys: other origins allowed to write, comma-separated"
    )
    batch_size: int = 20_000
    channel_bytes: int = 4 << 20
    stored_rejects_per_import: int = Field(
        default=10_000, ge=0, description="rejects kept per import (the record counts them all)"
    )
    lease_s: float = Field(
        default=60.0,
        gt=0,
        description="a running import whose process has not beaten for this long (another "
        "host's) is interrupted; the heartbeat comes every lease_s / 6",
    )
    progress_interval_s: float = 0.25
    staging_url: str | None = Field(
        default=None,
        description="stage uploads here (file:///shared/dir or s3://bucket/prefix) and queue "
        "them for the workers (antioom worker): an upload answers 202 with the queued record",
    )
    broker_url: str | None = Field(
        default=None,
        description="the workers' Celery broker (default: amqp://guest:guest@127.0.0.1:5672//)",
    )
    parts: int = Field(
        default=4, ge=1, description="a staged upload is imported in up to this many parts"
    )

    @property
    def keys(self) -> list[str]:
        """The bearer tokens."""
        return [token for _, token in self.named_keys]

    @property
    def named_keys(self) -> list[tuple[str, str]]:
        """``(name, token)`` per key: ``name:token`` entries name themselves, a plain token is
        ``key<N>`` by its position (a token holding ``:`` must therefore be given a name)."""
        entries = [entry.strip() for entry in self.api_keys.split(",") if entry.strip()]
        named: list[tuple[str, str]] = []
        for position, entry in enumerate(entries, 1):
            name, sep, token = entry.partition(":")
            if not sep:
                name, token = f"key{position}", entry
            name, token = name.strip(), token.strip()
            if not KEY_NAME.match(name) or not token:
                raise ConfigError(
                    f"API key #{position}: use TOKEN or NAME:TOKEN (a name of letters, digits, "
                    "'_', '.', '@', '-')"
                )
            if name in (known for known, _ in named):
                raise ConfigError(f"API key name {name!r} is given twice")
            named.append((name, token))
        return named
