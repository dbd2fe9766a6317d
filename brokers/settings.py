"""Settings: the one reader of the environment (prefix ``EDUJOBS_``).

Every other module receives its configuration from here (``get_settings()``), and middleware
receives it from ``brokers.setup``. An invalid value stops start-up with ``ConfigurationError``
naming the variable and what it expects.
"""

from __future__ import annotations

import functools
import re
import socket
from typing import Literal

from pydantic import AnyUrl, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.errors import ConfigurationError
from contracts.signing import Keyring

ENV_PREFIX = "EDUJOBS_"

#: The signing key when EDUJOBS_SIGNING_KEY is unset: public, so refused in production.
DEVELOPMENT_SIGNING_KEY = "edujobs-development-signing-key"

_URL_PASSWORD = re.compile(r"(?<=://)([^/\s:@]*):[^/\s@]*@")


class Settings(BaseSettings):
    """All of edujobs' settings, with their defaults (README lists them)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    environment: Literal["development", "test", "production"] = "development"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    # Broker
    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    rabbitmq_management_url: str = "http://guest:guest@127.0.0.1:15672"
    queue_prefetch: int = Field(default=0, ge=0, le=65535)
    #: classic: priority queues on one node; quorum: replicated across a RabbitMQ cluster (README)
    queue_type: Literal["classic", "quorum"] = "classic"
    publish_confirm_window: int = Field(default=500, ge=1, le=65535)
    dead_letter_ttl_days: float = Field(default=14, gt=0, le=3650)
    max_payload_bytes: int = Field(default=256 * 1024, ge=1024)
    park_threshold_seconds: float = Field(default=600, gt=0, le=1500)
    park_hop_seconds: float = Field(default=600, gt=0, le=1500)
    # validate_default: the production check must see the default too.
    signing_key: SecretStr = Field(default=SecretStr(DEVELOPMENT_SIGNING_KEY), validate_default=True)
    #: Other keys a worker accepts when verifying (never signs with): a rotation's old or next key.
    accepted_signing_keys: SecretStr = SecretStr("")

    # Storage and state
    database_url: str = "sqlite:///var/edujobs.db"
    record_job_state: bool = True
    redis_url: str | None = None
    storage_url: str = "file:var/storage"
    storage_public_url: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None

    # Circuit breakers (one per provider; state shared through redis_url when set)
    breaker_fail_max: int = Field(default=5, ge=1, le=10_000)
    breaker_reset_timeout: float = Field(default=60, gt=0, le=3600)
    breaker_namespace: str = Field(default="edujobs:breaker", min_length=1)

    # Media (ffmpeg, Pillow)
    ffmpeg_path: str = "ffmpeg"
    ffprobe_path: str = "ffprobe"
    ffmpeg_threads: int = Field(default=0, ge=0, le=64)
    ffmpeg_preset: Literal[
        "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"
    ] = "veryfast"
    media_max_duration_seconds: float = Field(default=10_800, gt=0)
    media_max_image_pixels: int = Field(default=50_000_000, ge=1)
    media_keep_exif: bool = False
    media_temp_dir: str | None = None

    # Email (SendGrid)
    sendgrid_api_key: SecretStr = SecretStr("")
    sendgrid_host: AnyUrl = AnyUrl("https://api.sendgrid.com")
    sendgrid_timeout: float = Field(default=10.0, gt=0, le=300)
    sendgrid_bulk_rate: float = Field(default=5.0, gt=0, le=1000)  # bulk requests per second
    email_from: str = "no-reply@edujobs.local"
    email_from_name: str = "edujobs"

    # SMS (Twilio)
    twilio_account_sid: str = ""
    twilio_auth_token: SecretStr = SecretStr("")
    twilio_from_number: str = ""
    twilio_base_url: AnyUrl = AnyUrl("https://api.twilio.com")
    twilio_timeout: float = Field(default=10.0, gt=0, le=300)
    twilio_status_callback_url: AnyUrl | None = None

    # Push (FCM HTTP v1)
    fcm_project_id: str = ""
    fcm_credentials_file: str | None = None
    fcm_base_url: AnyUrl = AnyUrl("https://fcm.googleapis.com")
    fcm_timeout: float = Field(default=10.0, gt=0, le=300)

    # Observability
    sentry_dsn: str | None = None
    sentry_environment: str | None = None  # unset: the value of `environment`
    sentry_release: str | None = None  # unset: Sentry's own guess (SENTRY_RELEASE, then the git commit)
    sentry_traces_sample_rate: float = Field(default=0.0, ge=0, le=1)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9191, ge=0, le=65535)  # 0 = no metrics
    metrics_dir: str | None = None  # unset: <temp dir>/edujobs-metrics (brokers.queue_stats)

    # how often workers read operators' queue pauses and job cancellations from the database; 0 = never
    operator_poll_seconds: float = Field(default=1.0, ge=0)

    # scheduler (schedules/, `edujobs scheduler`)
    schedule_timezone: str = "UTC"  # the district's time zone: crontab entries without their own
    scheduler_crontab: str = "schedules.crontab:CRONTAB"  # module:attribute of the crontab to run
    # modules (comma-separated) whose actors' periodic=cron(...) options are schedules too; "" = none
    scheduler_actors: str = "actors"
    scheduler_lease_seconds: float = Field(default=15.0, ge=1)  # a crashed leader is replaced after this
    scheduler_tick_seconds: float = Field(default=1.0, gt=0, le=60)  # how often due fires are looked for
    scheduler_metrics_port: int = Field(default=9193, ge=0, le=65535)  # 0 = no metrics

    # HTTP API (ops.api, `edujobs api`)
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=1, le=65535)
    api_max_body_bytes: int = Field(default=1_048_576, ge=1024)  # larger requests get 413
    api_rate_limit: float = Field(default=50.0, ge=0)  # requests/s per token (or address); 0 = no limit
    api_rate_burst: int = Field(
        default=100, ge=1
    )  # requests a caller may make at once before the rate applies

    # analytics reports (actors.reports.service): identical requests within this many seconds reuse
    # the stored report (0 = never); files are kept this many days, then the daily cleanup removes
    # them; download links point at the HTTP API under api_public_url (unset: http://api_host:api_port)
    report_cache_seconds: float = Field(default=1800.0, ge=0)
    report_keep_days: float = Field(default=7.0, gt=0, le=3650)
    api_public_url: str | None = None

    worker_name: str = Field(default_factory=socket.gethostname)

    # worker heartbeats (store.workers; `edujobs workers`, GET /v1/workers); 0 = no heartbeats
    heartbeat_seconds: float = Field(default=5.0, ge=0, le=300)
    heartbeat_stale_beats: int = Field(default=3, ge=1, le=1000)  # missed beats before "stale"
    heartbeat_forget_hours: float = Field(default=24.0, gt=0)  # silent workers are then forgotten
    worker_pool: str = Field(default="", max_length=128)  # pool name; unset: the worker's queues

    # dead letters older than dead_letter_ttl_days less this are archived to storage (daily)
    dead_letter_archive_margin_days: float = Field(default=2, ge=0, le=3650)

    # audit_logs rows are kept this long (7 years, leap days included), then archived to storage
    audit_retention_days: int = Field(default=2557, ge=365, le=36500)
    # academics rules (actors.academics.service): an attendance intervention opens for a student
    # absent on this many days within the last window_days days (the seed's 3 in 7)
    intervention_absences: int = Field(default=3, ge=1, le=366)
    intervention_window_days: int = Field(default=7, ge=1, le=366)

    # a worker silent this long (no ledger heartbeat) is judged dead: its claims are recovered
    ledger_owner_timeout_seconds: float = Field(default=20.0, ge=1, le=600)

    @field_validator("rabbitmq_url")
    @classmethod
    def _amqp_url(cls, value: str) -> str:
        for url in value.split(";"):
            if not url.startswith(("amqp://", "amqps://")):
                raise ValueError("expected an amqp:// or amqps:// URL")
        return value

    @field_validator("signing_key")
    @classmethod
    def _own_key_in_production(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        # Anyone can read the development key in the source: in production it would let anyone
        # forge messages that workers accept.
        if (
            info.data.get("environment") == "production"
            and value.get_secret_value() == DEVELOPMENT_SIGNING_KEY
        ):
            raise ValueError(
                "the built-in development key is refused when EDUJOBS_ENVIRONMENT=production: set a "
                "secret of your own, the same for every worker and producer (for example the output "
                "of `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        return value

    def keyring(self) -> Keyring:
        """The key messages are signed with, and every key accepted when verifying them."""
        accepted = self.accepted_signing_keys.get_secret_value()
        keys = tuple(k.strip().encode() for k in accepted.split(",") if k.strip())
        return Keyring(self.signing_key.get_secret_value().encode(), keys)

    @field_validator("schedule_timezone")
    @classmethod
    def _time_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("expected an IANA time zone such as Europe/Paris or America/New_York") from None
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
            raise ValueError("expected a sqlite:/// or postgresql:// URL")
        if value.startswith("postgresql://"):
            value = "postgresql+psycopg://" + value.removeprefix("postgresql://")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected a redis:// URL, or nothing for in-process state")
        return value

    @field_validator("email_from")
    @classmethod
    def _email(cls, value: str) -> str:
        if "@" not in value or value.startswith("@") or value.endswith("@"):
            raise ValueError("expected an email address such as no-reply@example.org")
        return value

    @field_validator("twilio_from_number")
    @classmethod
    def _e164(cls, value: str) -> str:
        if value and not (value.startswith("+") and value[1:].isdigit() and 8 <= len(value) <= 16):
            raise ValueError("expected an E.164 phone number such as +15005550006, or nothing")
        return value

    @field_validator("storage_url")
    @classmethod
    def _storage_url(cls, value: str) -> str:
        if not value.startswith(("file:", "s3://")):
            raise ValueError("expected file:PATH, file:///ABSOLUTE/PATH or s3://BUCKET/PREFIX")
        return value

    @property
    def dead_letter_ttl_ms(self) -> int:
        return int(self.dead_letter_ttl_days * 86_400_000)


def load_settings() -> Settings:
    """Read the settings from the environment; raise ``ConfigurationError`` on a bad value."""
    try:
        return Settings()
    except ValidationError as e:
        raise ConfigurationError(describe_settings_error(e)) from None


@functools.cache
def get_settings() -> Settings:
    """Return the process's settings, read once."""
    return load_settings()


def describe_settings_error(error: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for item in error.errors():
        name = ENV_PREFIX + "_".join(str(part) for part in item["loc"]).upper()
        given = item.get("input")
        if isinstance(given, str):
            given = mask_url_password(given)
        shown = "" if isinstance(given, dict) or "key" in name.lower() else f" (got {given!r})"
        lines.append(f"  {name}: {item['msg']}{shown}")
    return "\n".join(lines)


def mask_url_password(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***`` (the user is kept)."""
    return _URL_PASSWORD.sub(r"\1:***@", text)
