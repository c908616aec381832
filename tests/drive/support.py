"""Helpers shared by the drive tests."""

from __future__ import annotations

import io
import zipfile

from apps.bots.services import bot_deploy, package_limits
from apps.drive.package import package_read_zip


def package_zip(bot: str, files: dict[str, bytes]) -> io.BytesIO:
    """A package archive of `bot`: each of `files` (paths below `<bot>.gbai/`) with its bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in files.items():
            archive.writestr(f"{bot}.gbai/{path}", data)
    buffer.seek(0)
    return buffer


def package_deploy(files: dict[str, bytes], bot: str = "shop"):
    """Deploy `files` as the package of `bot` in the current tenant (the deploy API's path); its report."""
    return bot_deploy(package=package_read_zip(package_zip(bot, files), limits=package_limits()))
