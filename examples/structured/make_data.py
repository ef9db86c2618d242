"""Writes train.jsonl and validation.jsonl for the structured-output example (examples/structured/job.yaml).

Each row asks the model to pull a person's name and age out of a sentence as JSON; `name` and `age` are the
reference fields the grader compares `{{sample.output_json.name}}` / `{{sample.output_json.age}}` with.
Validation sentences use names never seen in training. Run: `python examples/structured/make_data.py`.
"""

import json
import random
from pathlib import Path

NAMES = ["Maria", "John", "Aiko", "Omar", "Lena", "Pedro", "Fatima", "Ivan", "Chloe", "Kwame", "Sofia", "Liam",
         "Mei", "Ahmed", "Nora", "Diego", "Hana", "Lucas", "Amara", "Felix", "Zara", "Mateo", "Ingrid", "Ravi",
         "Elena", "Tomas", "Yuki", "Samir", "Olga", "Hugo"]
CITIES = ["Lima", "Oslo", "Cairo", "Lyon", "Perth", "Quito", "Riga", "Kyoto", "Accra", "Porto"]
TEMPLATES = ["{n} is {a} years old and lives in {c}.", "Last year {n} moved to {c}; {n} is now {a}.",
             "At {a}, {n} runs a bakery in {c}.", "{n}, aged {a}, was born in {c}."]
PROMPT = ('Extract the person\'s name and age from this sentence. Answer with a JSON object like '
          '{{"name": "...", "age": 0}}.\nSentence: {s}')


def rows(names, n, rng):
    out = []
    for _ in range(n):
        name, age, city = rng.choice(names), rng.randint(18, 90), rng.choice(CITIES)
        s = rng.choice(TEMPLATES).format(n=name, a=age, c=city)
        out.append({"messages": [{"role": "user", "content": PROMPT.format(s=s)}], "name": name, "age": str(age)})
    return out


def main():
    rng = random.Random(0)
    here = Path(__file__).parent
    for fname, names, n in (("train.jsonl", NAMES[:22], 200), ("validation.jsonl", NAMES[22:], 60)):
        with open(here / fname, "w") as f:
            for r in rows(names, n, rng):
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
