"""Regenerate .dvc/offline_plots.html: DVC's plots page with Vega bundled in, so `dvc plots show`
renders with no network (DVC's default page loads Vega, Vega-Lite and vega-embed from a CDN).

A maintainer tool, not a runtime dependency: the committed template is what DVC uses
(`plots.html_template` in .dvc/config). To refresh the bundle:

    pip install vl-convert-python && python scripts/offline_plots_template.py
"""

from __future__ import annotations

import sys
from pathlib import Path

# Vega-Lite 5: DVC's built-in templates are Vega-Lite v5 specs.
VEGALITE = "5.20"
OUT = Path(__file__).resolve().parents[1] / ".dvc" / "offline_plots.html"

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- Vega %(vega)s, Vega-Lite %(vl)s, vega-embed %(embed)s (BSD-3-Clause), bundled by
         vl-convert-python %(vlc)s via scripts/offline_plots_template.py: no network needed. -->
    <script type="text/javascript">
%(bundle)s
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def main() -> int:
    try:
        import vl_convert
    except ImportError:
        print("needs vl-convert-python: pip install vl-convert-python", file=sys.stderr)
        return 2
    bundle = vl_convert.javascript_bundle(vl_version=VEGALITE)
    for placeholder in ("{plot_divs}", "{scripts}", "{refresh_tag}"):
        if placeholder in bundle:  # DVC substitutes these anywhere in the page
            print(f"bundle contains DVC's placeholder {placeholder}", file=sys.stderr)
            return 1
    page = PAGE % {
        "vega": vl_convert.get_vega_version(),
        "vl": VEGALITE,
        "embed": vl_convert.get_vega_embed_version(),
        "vlc": getattr(vl_convert, "__version__", "?"),
        "bundle": bundle,
    }
    OUT.write_text(page, encoding="utf-8")
    print(f"wrote {OUT} ({len(page)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
