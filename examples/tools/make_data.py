"""Writes train.jsonl and validation.jsonl for the tool-call example (examples/tools/job.yaml).

Each row offers three OpenAI function tools (`tools`) and asks a question one of them answers; `tool` is the
function that should be called and `arg` the argument value it should carry. Validation uses cities never seen
in training. Run: `python examples/tools/make_data.py`.
"""

import json
import random
from pathlib import Path

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                     "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "description": "Current local time in a city",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                     "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_population", "description": "Number of people living in a city",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                     "required": ["city"]}}},
]
QUESTIONS = {"get_weather": ["What's the weather like in {c}?", "Is it raining in {c} right now?"],
             "get_time": ["What time is it in {c}?", "Tell me the current time in {c}."],
             "get_population": ["How many people live in {c}?", "What is the population of {c}?"]}
CITIES = ["Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Sydney", "Toronto", "Madrid", "Nairobi", "Seoul", "Dublin",
          "Mumbai", "Berlin", "Quito", "Hanoi", "Rome", "Vienna", "Lagos", "Denver", "Manila"]


def rows(cities, n, rng):
    out = []
    for _ in range(n):
        tool, city = rng.choice(sorted(QUESTIONS)), rng.choice(cities)
        q = rng.choice(QUESTIONS[tool]).format(c=city)
        out.append({"messages": [{"role": "user", "content": q}], "tools": TOOLS, "tool": tool, "arg": city})
    return out


def main():
    rng = random.Random(0)
    here = Path(__file__).parent
    for fname, cities, n in (("train.jsonl", CITIES[:15], 200), ("validation.jsonl", CITIES[15:], 60)):
        with open(here / fname, "w") as f:
            for r in rows(cities, n, rng):
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
