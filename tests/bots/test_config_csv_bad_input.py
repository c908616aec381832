"""config.csv input the parser must not misread: its refusals say what is wrong and what happens (nothing of
the file is applied), and no setting is made up from a piece of another."""

import pytest
from django_tenants.utils import schema_context

from apps.bots.models import BotConfig
from apps.bots.services import bot_deploy, package_limits
from apps.drive.package import package_read_dir
from apps.drive.services import drive_scan
from apps.drive.storage import tenant_drive

CONFIG_KEY = "shop.gbai/shop.gbot/config.csv"


def _deployed_shop(tmp_path) -> None:
    root = tmp_path / "package" / "shop.gbai"
    (root / "shop.gbot").mkdir(parents=True)
    (root / "shop.gbot" / "config.csv").write_bytes(b"name,value\nbot-name,Shop\n")
    assert bot_deploy(package=package_read_dir(root, limits=package_limits())).errors == {}


@pytest.mark.django_db
def test_a_duplicate_key_refuses_the_file_and_says_so(canary_tenants, local_storage, tmp_path):
    """The refusal read "the value on line 3 wins" while nothing of the file was applied."""
    with schema_context(canary_tenants.a.schema_name):
        _deployed_shop(tmp_path)
        tenant_drive().write(CONFIG_KEY, b"name,value\nbot-name,Old\nbot-name,New\n")
        failure = drive_scan().failed[CONFIG_KEY]
        assert failure == ("config.csv: line 3: duplicate key 'bot-name' (first set on line 2); a key may be set "
                           "once: remove one of the two lines")
        assert "wins" not in failure
        assert list(BotConfig.objects.values_list("key", "value")) == [("bot-name", "Shop")]
