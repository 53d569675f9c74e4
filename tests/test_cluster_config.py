"""Cluster mode's settings: off by default, on with a database and a blob URL together,
and every wrong value stopping the relay with a message naming the setting."""

import pytest

from relay.config import Config
from relay.errors import ConfigError

PG = "postgresql://relay:secret@db.internal:5432/stylerelay"


def test_without_the_flags_the_relay_is_one_process_as_before() -> None:
    config = Config.load({}, {})
    assert (config.database_url, config.blob_url, config.cluster) == (None, None, False)


def test_a_database_and_a_bucket_turn_cluster_mode_on() -> None:
    blob = "s3://stylerelay?endpoint=http://seaweedfs:8333"
    config = Config.load({"database_url": PG}, {"STYLERELAY_BLOB_URL": blob})
    assert (config.database_url, config.blob_url, config.cluster) == (PG, blob, True)
    assert config.replica_dead_after == 15.0


def test_a_shared_folder_is_a_blob_url_too() -> None:
    config = Config.load({"database_url": PG, "blob_url": "file:///srv/stylerelay"}, {})
    assert config.blob_url == "file:///srv/stylerelay"


def test_the_database_password_is_not_in_the_configs_repr() -> None:
    config = Config.load({"database_url": PG, "blob_url": "file:///srv/x"}, {})
    assert "secret" not in repr(config)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"database_url": "mysql://x/y", "blob_url": "file:///x"}, "--database-url"),
        ({"database_url": PG, "blob_url": "ftp://bucket"}, "--blob-url"),
        ({"database_url": PG, "blob_url": "file://relative"}, "--blob-url: .*absolute"),
        ({"database_url": PG}, "go together"),
        ({"blob_url": "file:///srv/x"}, "go together"),
    ],
)
def test_wrong_cluster_settings_stop_the_relay_saying_which(
    flags: dict[str, str | None], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Config.load(flags, {})
