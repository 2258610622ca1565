"""/usr/share/doc/card-agent/copyright, from the venv's own metadata, to stdout.

    python3 packaging/deb/copyright.py SITE_PACKAGES YEARS

card-agent's licence, then every Python distribution the private virtualenv bundles
with its version and declared licence (License-Expression, else License, else the
trove classifiers) and where its licence files are, then the native libraries the
manylinux wheels vendor (`<name>.libs/`).
"""

from __future__ import annotations

import sys
from email.parser import HeaderParser
from pathlib import Path

VENV_SITE = "/opt/card-agent/venv/lib/python3.11/site-packages"

HEADER = """\
card-agent: the kiosk card agent (China E-Port card, localhost signing API).

Copyright (C) {years} the card-agent authors
License: Apache-2.0
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.

The package bundles the Python distributions below in its private virtualenv,
/opt/card-agent/venv. Each one's licence files are in its .dist-info directory under
{site}/ (licenses/ or next to METADATA).

"""


def declared_license(meta: dict[str, str], classifiers: list[str]) -> str:
    if meta.get("License-Expression"):
        return meta["License-Expression"]
    text = (meta.get("License") or "").strip()
    if text and "\n" not in text and len(text) <= 60:
        return text
    found = [c.split(" :: ")[-1] for c in classifiers if c.startswith("License ::")]
    return "; ".join(found) or "see its licence files"


def distributions(site: Path) -> list[tuple[str, str, str]]:
    rows = []
    for info in sorted(site.glob("*.dist-info")):
        message = HeaderParser().parsestr((info / "METADATA").read_text("utf-8"))
        meta = {k: str(v) for k, v in message.items()}
        classifiers = [str(v) for v in message.get_all("Classifier") or []]
        name, version = meta["Name"], meta["Version"]
        if name.lower() == "card-agent":
            continue
        rows.append((name, version, declared_license(meta, classifiers)))
    return rows


def vendored_libraries(site: Path) -> list[tuple[str, str]]:
    return [
        (libs.name, lib.name)
        for libs in sorted(site.glob("*.libs"))
        for lib in sorted(libs.iterdir())
    ]


def main(site: Path, years: str) -> None:
    out = [HEADER.format(site=VENV_SITE, years=years)]
    rows = distributions(site)
    width = max(len(f"{n} {v}") for n, v, _ in rows)
    out += [f"  {f'{n} {v}':<{width}}  {lic}\n" for n, v, lic in rows]
    libs = vendored_libraries(site)
    if libs:
        out.append(
            "\nNative libraries vendored by those wheels (manylinux), under the licence of"
            "\nthe distribution that ships them:\n\n"
        )
        out += [f"  {where}/{lib}\n" for where, lib in libs]
    sys.stdout.write("".join(out))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
