"""Bot packages for the console tests, built in memory as the .zip a user uploads."""

from __future__ import annotations

import io
import zipfile

BROKEN_SCRIPT = 'TALK "hi"\nx = = 2\n'  # line 2, column 5: expected a value
TOOL_SCRIPT = ('PARAM visitor AS STRING LIKE "Ana" DESCRIPTION "Who visits"\nDESCRIPTION "Book a visit"\n'
               'TALK "Booked for " + visitor\n')


def package_zip(bot: str, files: dict[str, str | bytes]) -> bytes:
    """A zip holding one `<bot>.gbai/` folder with `files` (paths inside the package)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, content in files.items():
            archive.writestr(f"{bot}.gbai/{path}", content)
    return buffer.getvalue()


def demo_files(bot: str) -> dict[str, str]:
    return {
        f"{bot}.gbot/config.csv": "name,value\nllm-cache,false\ntimezone,America/Sao_Paulo\n",
        f"{bot}.gbdialog/start.bas": 'TALK "Welcome"\n',
        f"{bot}.gbdialog/broken.bas": BROKEN_SCRIPT,
        f"{bot}.gbdialog/book-visit.bas": TOOL_SCRIPT,
        f"{bot}.gbkb/manual/returns.txt": "Returns are accepted within 30 days with the receipt.\n",
    }
