"""Fill the ``names`` of ``config/languages.json`` from CLDR: every language's name in every one.

A one-off for maintainers, run when a language is added (the bridge itself never imports
babel)::

    python -m venv /tmp/cldr && /tmp/cldr/bin/pip install 'babel>=2.18'
    /tmp/cldr/bin/python config/language_names.py

Only ``names`` is rewritten; digits, voices and the rest are edited by hand. CLDR gives the
form used mid-sentence ("La persona que llama habla inglés"), which is what the agent's
whisper needs. Review the diff: the names are spoken to agents.
"""

import json
from pathlib import Path

from babel import Locale

TABLE = Path(__file__).resolve().parent / "languages.json"


def main() -> None:
    document = json.loads(TABLE.read_text(encoding="utf-8"))
    languages = document["languages"]
    for code, entry in languages.items():
        names = Locale.parse(code).languages
        entry["names"] = {other: names[other] for other in languages}
    TABLE.write_text(json.dumps(document, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"wrote the names of {len(languages)} languages in each of them to {TABLE}")


if __name__ == "__main__":
    main()
