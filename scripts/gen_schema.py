"""Write ``campaigns/campaign.schema.json`` from the campaign model.

Run after changing ``scheduler/campaign.py``: ``python scripts/gen_schema.py``. The unit
test ``tests/unit/test_schema_fresh.py`` fails while the committed file is out of date.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from scheduler.campaign import campaign_json_schema

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "campaigns" / "campaign.schema.json"


def schema_text() -> str:
    """The schema exactly as it is committed: indent 2, keys in model order, final newline."""
    return json.dumps(campaign_json_schema(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    """Write the schema file; print where it went."""
    SCHEMA_PATH.write_text(schema_text(), encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
