"""Site identity: who this site is, where its center is, kept in `<data dir>/site.json`.

`shouwang agent init` writes it once; every other agent command reads it. The site id carries
its region and township ("region.township.site"), so a site knows its township without asking.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Annotated

import msgspec

from events.types import SiteId, SiteKind
from events.wire import down_consumer, inbox_prefix
from runtime import natsurl

HostName = Annotated[
    str, msgspec.Meta(pattern=r"^(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)$")]

CONFIG_NAME = "site.json"
LOG_NAME = "log.sqlite"


class ConfigError(Exception):
    """The data directory has no usable site configuration; the message says what to do."""


def check_nats_url(url: str) -> str:
    """`url` if it is a NATS server URL nats-py can use, or a comma-separated list of them (the
    servers of a center's JetStream cluster, runtime/natsurl.py); else ValueError saying what is
    wrong."""
    return natsurl.check(url)


class SiteConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    site_id: SiteId
    kind: SiteKind
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=80)]
    nats_url: Annotated[str, msgspec.Meta(min_length=1)]
    creds: str | None = None
    # CA certificate (PEM) that signed the server's certificate, for a tls:// URL whose server
    # uses the county's own CA rather than one the system trusts.
    tls_ca: str | None = None
    # JetStream domain of the county hub, for a site that connects through its township's leaf
    # node (deploy/nats/township-leaf.conf); None when connecting to the hub itself.
    js_domain: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,32}$")] | None = None
    # Staff account written into `actor` when a draft names none.
    default_actor: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._@-]{1,64}$")] = "station"
    # Host names (besides 127.0.0.1, localhost and [::1]) under which `agent serve` answers, e.g.
    # the station computer's name on its LAN; any other Host header is refused (sync_agent/door.py).
    allowed_hosts: list[HostName] = msgspec.field(default_factory=list)
    # How long a log-in at the station's pages lasts.
    session_minutes: Annotated[int, msgspec.Meta(ge=5, le=7 * 24 * 60)] = 8 * 60

    def __post_init__(self) -> None:
        check_nats_url(self.nats_url)  # a ValueError is reported as a ValidationError naming it

    @property
    def township(self) -> str:
        """'region.township', the township this site belongs to."""
        return self.site_id.rsplit(".", 1)[0]

    @property
    def durable_name(self) -> str:
        """This site's durable consumer on CARE_DOWN (consumer names may not contain dots)."""
        return down_consumer(self.site_id)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(SiteConfig)


def config_path(data_dir: Path) -> Path:
    return Path(data_dir) / CONFIG_NAME


def log_path(data_dir: Path) -> Path:
    return Path(data_dir) / LOG_NAME


def write_config(data_dir: Path, config: SiteConfig) -> Path:
    """Validate and write the site's configuration; refuse to overwrite another site's identity."""
    config = msgspec.convert(msgspec.to_builtins(config), type=SiteConfig)  # enforce the constraints
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # children's data: the site's own user only
    path = config_path(data_dir)
    if path.exists():
        existing = load_config(data_dir)
        if existing.site_id != config.site_id:
            raise ConfigError(f"{path} already belongs to site {existing.site_id!r}; a data directory holds "
                              f"one site's log and cannot be given to {config.site_id!r}")
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(msgspec.json.format(_encoder.encode(config)) + b"\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_config(data_dir: Path) -> SiteConfig:
    path = config_path(Path(data_dir))
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path} not found: run `shouwang agent init --data {data_dir} ...` first") from None
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError as err:
        raise ConfigError(f"{path}: {err}") from None
    except msgspec.DecodeError as err:
        raise ConfigError(f"{path} is not valid JSON: {err}") from None


class _PasswordCreds(msgspec.Struct, frozen=True):
    """Credentials as the center's `register_site` hands them out (JSON)."""

    user: str
    password: str
    inbox_prefix: str | None = None
    site_id: str | None = None
    durable: str | None = None


def connect_options(config: SiteConfig) -> dict[str, object]:
    """nats.connect() options for this site: its credentials (a JSON file with user and password
    from the center's site registration, or a NATS .creds file with JWT and seed) and, with
    `tls_ca`, a TLS context that trusts that CA."""
    # Replies (fetches, restore and read uploads) always come below the site's own inbox: the
    # center answers nothing else (events.wire.is_own_inbox), with or without NATS users.
    opts: dict[str, object] = {"inbox_prefix": inbox_prefix(config.site_id)}
    if config.tls_ca is not None:
        try:
            opts["tls"] = ssl.create_default_context(cafile=config.tls_ca)
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(f"tls_ca {config.tls_ca}: cannot be used as a CA certificate: {err}") from None
    return {**opts, **_creds_options(config)}


def _creds_options(config: SiteConfig) -> dict[str, object]:
    if config.creds is None:
        return {}
    path = Path(config.creds)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"credentials file {path} cannot be read: {err.strerror}") from None
    if data.lstrip().startswith(b"{"):
        try:
            creds = msgspec.json.decode(data, type=_PasswordCreds)
        except msgspec.DecodeError as err:
            raise ConfigError(f"credentials file {path}: {err}") from None
        opts: dict[str, object] = {"user": creds.user, "password": creds.password}
        if creds.inbox_prefix:
            opts["inbox_prefix"] = creds.inbox_prefix
        return opts
    return {"user_credentials": str(path)}
