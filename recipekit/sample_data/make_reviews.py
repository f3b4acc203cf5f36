"""Write the quickstart's movie-review set: python -m recipekit.sample_data.make_reviews

Reviews are composed from the hand-written sentences below (this project's own text): an optional
opening, two to four remarks on different aspects of a film, and often a closing verdict. About a third
of the reviews carry one remark of the opposite polarity, so the label is the overall opinion, not the
presence of a single word. Seeded, so the committed CSVs are reproducible byte for byte.
"""

import csv
import random
from pathlib import Path

OPENINGS = [
    "I went in knowing nothing about this one.",
    "Saw this on a rainy Sunday afternoon.",
    "My sister dragged me to the late showing.",
    "I had been waiting for this release for months.",
    "Watched it at home with a bowl of popcorn.",
    "A friend recommended it, so I gave it a try.",
    "This was the closing film at our local festival.",
    "I caught it on a long flight.",
    "The trailer had me curious.",
    "We picked it almost at random from the list.",
    "I rewatched this after many years.",
    "Our film club chose this for the month.",
]

REMARKS = {
    "acting": (
        [
            "The lead gives a warm, layered performance that carries every scene.",
            "The whole cast is terrific, down to the smallest roles.",
            "The two leads have real chemistry and their scenes crackle.",
            "The young actress is a revelation and steals the film.",
            "Every performance feels lived-in and honest.",
        ],
        [
            "The lead delivers every line as if reading a shopping list.",
            "The acting is stiff and nobody seems to believe their own words.",
            "The two leads share zero chemistry, which sinks the romance.",
            "The villain is played so broadly that he becomes a cartoon.",
            "Half the cast looks bored and the other half overacts.",
        ],
    ),
    "story": (
        [
            "The story is clever and keeps surprising you right to the end.",
            "The plot unfolds with patience and pays off beautifully.",
            "The script is sharp, funny and surprisingly moving.",
            "Every twist feels earned rather than thrown in for shock.",
            "It tells a simple story with a great deal of heart.",
        ],
        [
            "The plot is a mess of loose threads that never come together.",
            "You can guess every twist twenty minutes before it arrives.",
            "The script is lazy and full of clumsy exposition.",
            "The story makes no sense and the film does not seem to care.",
            "It borrows every idea from better films and adds nothing.",
        ],
    ),
    "direction": (
        [
            "The direction is confident and every shot has a purpose.",
            "The director knows exactly when to hold back and when to let go.",
            "It is beautifully staged, with scenes that linger in the mind.",
            "The filmmaking is assured from the very first frame.",
        ],
        [
            "The direction is flat and the scenes just sit there.",
            "The director seems unsure what kind of film this is meant to be.",
            "Scenes are staged so clumsily that the tension never builds.",
            "It looks like nobody was in charge behind the camera.",
        ],
    ),
    "music": (
        [
            "The score is gorgeous and lifts the emotional moments.",
            "The soundtrack is a joy and I have been humming it all week.",
            "The music is used sparingly and to great effect.",
            "The songs fit the mood perfectly.",
        ],
        [
            "The score is loud and tells you what to feel in every scene.",
            "The soundtrack is grating and drowns out the dialogue.",
            "The music is generic and instantly forgettable.",
            "The songs feel pasted on and break the mood.",
        ],
    ),
    "visuals": (
        [
            "The photography is stunning, every frame could be a painting.",
            "The effects are seamless and serve the story.",
            "The production design is rich and full of lovely detail.",
            "It looks wonderful, with a colour palette that sets the mood.",
        ],
        [
            "The effects look cheap and pull you right out of the story.",
            "The camera shakes so much that the action is impossible to follow.",
            "The sets look like cardboard and the lighting is murky.",
            "It is ugly to look at, grey and washed out from start to finish.",
        ],
    ),
    "pacing": (
        [
            "The pacing is tight and the two hours fly by.",
            "It never drags, not even for a minute.",
            "The film moves briskly without ever feeling rushed.",
            "Scene after scene builds momentum towards a satisfying finish.",
        ],
        [
            "The pacing is glacial and I checked my watch constantly.",
            "It drags badly in the middle and never recovers.",
            "At two and a half hours it feels twice as long.",
            "Scenes go on long after their point has been made.",
        ],
    ),
    "humour": (
        [
            "The jokes land and the audience laughed out loud throughout.",
            "It is genuinely funny without ever being mean.",
            "The comic timing is spot on.",
            "There are moments of sly humour that had me grinning.",
        ],
        [
            "The jokes fall flat and the theatre was silent.",
            "The humour is crude and gets tiresome fast.",
            "Every gag is stretched until it stops being funny.",
            "It tries so hard to be funny that it becomes embarrassing.",
        ],
    ),
    "ending": (
        [
            "The ending is perfect and left me with a lump in my throat.",
            "The final act ties everything together brilliantly.",
            "The last scene is one I will remember for a long time.",
            "It ends on exactly the right note.",
        ],
        [
            "The ending is rushed and ruins what came before.",
            "The final act collapses into noise and confusion.",
            "The last scene is so silly that people around me groaned.",
            "It just stops rather than ends.",
        ],
    ),
}

VERDICTS = (
    [
        "Highly recommended.",
        "One of the best films I have seen this year.",
        "I would happily watch it again.",
        "Go and see it on the biggest screen you can find.",
        "A real gem, do not miss it.",
        "Easily worth the ticket price.",
        "I loved it.",
        "Ten out of ten from me.",
    ],
    [
        "Avoid this one.",
        "A complete waste of an evening.",
        "I wanted my money back.",
        "Skip it and rewatch something better.",
        "One of the worst films I have seen in years.",
        "Not worth your time.",
        "I regret watching it.",
        "Two out of ten, and that is generous.",
    ],
)

LABELS = ("negative", "positive")


def compose(rng: random.Random, positive: bool) -> str:
    side = 0 if positive else 1
    aspects = rng.sample(sorted(REMARKS), rng.randint(2, 4))
    # One remark of the other polarity in about a third of reviews, never the only remark.
    contrary = rng.randrange(1, len(aspects)) if rng.random() < 0.35 else None
    parts = [rng.choice(OPENINGS)] if rng.random() < 0.6 else []
    for i, aspect in enumerate(aspects):
        pool = REMARKS[aspect][1 - side if i == contrary else side]
        remark = rng.choice(pool)
        if i == contrary:
            remark = rng.choice(["Sadly, ", "That said, ", "On the other hand, ", "Still, "]) + remark[0].lower() + remark[1:]
            if not positive:
                remark = rng.choice(["To be fair, ", "Admittedly, ", "In fairness, "]) + remark.split(", ", 1)[1]
        parts.append(remark)
    if rng.random() < 0.7:
        parts.append(rng.choice(VERDICTS[side]))
    return " ".join(parts)


def build(n_train: int = 320, n_test: int = 120, seed: int = 13) -> dict[str, list[tuple[str, str]]]:
    rng = random.Random(seed)
    seen, rows = set(), []
    while len(rows) < n_train + n_test:
        positive = len(rows) % 2 == 0
        text = compose(rng, positive)
        if text not in seen:
            seen.add(text)
            rows.append((text, LABELS[positive]))
    rng.shuffle(rows)
    return {"train": rows[:n_train], "test": rows[n_train:]}


def main() -> None:
    here = Path(__file__).parent
    for split, rows in build().items():
        with open(here / f"reviews_{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(rows)


if __name__ == "__main__":
    main()
