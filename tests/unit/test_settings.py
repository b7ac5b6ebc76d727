"""Settings read the MAILMOAT_* environment exactly as pydantic-settings would (same names, same
defaults, same decoding), without importing it."""

from typing import Annotated

import pydantic_settings
import pytest
from pydantic import create_model, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mailmoat.settings import AwsSettings, Limits, NoDecode, Settings


def reference(model: type, prefix: str) -> type:
    """The same fields and validators on pydantic-settings: what the reader must agree with."""
    fields = {name: (Annotated[field.annotation, pydantic_settings.NoDecode]
                     if NoDecode in field.metadata else field.annotation, field)
              for name, field in model.model_fields.items()}
    zones = [name for name in ("dnsbl_ip_zones", "dnsbl_domain_zones") if name in fields]
    validators = {"zone_list": field_validator(*zones, mode="before")(
        Settings._zone_list.__func__)} if zones else {}

    class Base(BaseSettings):
        model_config = SettingsConfigDict(env_prefix=prefix, extra="ignore")

    return create_model(f"Reference{model.__name__}", __base__=Base, __validators__=validators,
                        **fields)


ENVIRONMENTS = [
    {},
    {"MAILMOAT_MODE": "test", "MAILMOAT_SMTP_PORT": "2626", "MAILMOAT_DATA_DIR": "/srv/mm",
     "MAILMOAT_HOLD_PROCESSING": "true", "MAILMOAT_DNS_TIMEOUT": "1.5"},
    {"mailmoat_runtime": "aws", "Mailmoat_Raw_Bucket": "raw", "MAILMOAT_SES_SPAM_VERDICT": "0"},
    {"MAILMOAT_DNSBL_IP_ZONES": "zen.example.org=127.0.0.2|127.0.0.4, bl.example.net",
     "MAILMOAT_DNSBL_DOMAIN_ZONES": '["dbl.example.org"]'},
    {"MAILMOAT_CONFIG": "", "MAILMOAT_PORTAL_BASE_URL": "", "MAILMOAT_ARC_KEY_FILE": "/k.pem"},
    {"MAILMOAT_SCHEDULE_SPAM_DIGEST_HOUR": "23", "MAILMOAT_STAGE_QUEUE_URLS": "scan=u1,isolate=u2",
     "MAILMOAT_INGRESS": "receipt-rules", "MAILMOAT_SIGNATURE_DIR": "/tmp/sigs"},
    {"MAILMOAT_LIMITS": '{"max_parts": 9}'},
]


@pytest.mark.parametrize("environment", ENVIRONMENTS)
@pytest.mark.parametrize("model", [Settings, AwsSettings])
def test_the_environment_reads_as_pydantic_settings_reads_it(model, environment, monkeypatch):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert model().model_dump() == reference(model, "MAILMOAT_")().model_dump()


@pytest.mark.parametrize("environment", [{}, {"MAILMOAT_LIMIT_MAX_PARTS": "7",
                                              "mailmoat_limit_scan_seconds": "2.5"}])
def test_limits_read_their_own_prefix(environment, monkeypatch):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert Limits().model_dump() == reference(Limits, "MAILMOAT_LIMIT_")().model_dump()
    assert Settings().limits == Limits()


@pytest.mark.parametrize(("name", "value"), [
    ("MAILMOAT_SMTP_PORT", "many"), ("MAILMOAT_MODE", "lax"), ("MAILMOAT_INGRESS", "smtp"),
    ("MAILMOAT_SCHEDULE_SPAM_DIGEST_HOUR", "24"), ("MAILMOAT_DNSBL_IP_ZONES", "[not json"),
    ("MAILMOAT_LIMITS", "{"),
])
def test_a_bad_value_is_refused(name, value, monkeypatch):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError):
        AwsSettings()


def test_what_the_caller_passes_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("MAILMOAT_SMTP_PORT", "2626")
    monkeypatch.setenv("MAILMOAT_RAW_BUCKET", "from-env")
    settings = AwsSettings(smtp_port=25)
    assert (settings.smtp_port, settings.raw_bucket) == (25, "from-env")
