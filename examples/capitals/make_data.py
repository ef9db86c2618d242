"""Writes train.jsonl and validation.jsonl for the capitals example (already committed; rerun to regenerate).

    python examples/capitals/make_data.py
"""

import json
import random
from pathlib import Path

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon",
    "Japan": "Tokyo", "China": "Beijing", "India": "New Delhi", "Egypt": "Cairo", "Kenya": "Nairobi",
    "Canada": "Ottawa", "Mexico": "Mexico City", "Brazil": "Brasilia", "Argentina": "Buenos Aires",
    "Peru": "Lima", "Russia": "Moscow", "Poland": "Warsaw", "Greece": "Athens", "Turkey": "Ankara",
    "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki", "Denmark": "Copenhagen",
    "Ireland": "Dublin", "Austria": "Vienna", "Hungary": "Budapest", "Thailand": "Bangkok",
    "Vietnam": "Hanoi", "South Korea": "Seoul", "Australia": "Canberra", "Chile": "Santiago",
    "Cuba": "Havana", "Iran": "Tehran", "Iraq": "Baghdad", "Belgium": "Brussels", "Netherlands": "Amsterdam",
}


def main() -> None:
    here = Path(__file__).parent
    items = sorted(CAPITALS.items())
    random.Random(0).shuffle(items)
    split = {"train": items[:26], "validation": items[26:]}
    for name, rows in split.items():
        with open(here / f"{name}.jsonl", "w") as f:
            for country, capital in rows:
                f.write(json.dumps({
                    "messages": [{"role": "user", "content": f"What is the capital of {country}? Answer with just the city."}],
                    "capital": capital, "country": country,
                }) + "\n")


if __name__ == "__main__":
    main()
