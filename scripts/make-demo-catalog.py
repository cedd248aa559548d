#!/usr/bin/env python3
"""Writes the demo catalog (www/catalog/demo.json) and its generated SVG photos (www/images/).

The images are drawn here, from the item number alone, so the demo needs no network and no
third-party photos. Re-running it produces byte-identical files.
"""
import json
import math
import os
import random

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "www")
CATEGORIES = {
    "animals": ["Curious fox", "Sleeping cat", "Heron at rest", "Two horses", "Owl in oak", "Lazy seal", "Hare in frost"],
    "architecture": ["Spiral stair", "Glass atrium", "Brick arches", "Concrete wave", "Old lighthouse", "Tiled dome", "Steel bridge"],
    "cars": ["Red roadster", "Rusty pickup", "Rally blue", "Night taxi", "Vintage coupe", "Camper van", "Green racer"],
    "cities": ["Rainy crossing", "Rooftops at dusk", "Canal houses", "Neon alley", "Morning market", "Tram lines", "Harbour lights"],
    "flowers": ["Tulips at dawn", "Poppy field", "Blue iris", "Cherry blossom", "Sunflower row", "White lilies", "Wild lupins"],
    "landscape": ["Fjord mist", "Dune ridge", "Autumn valley", "Glacier tongue", "Lavender hills", "Salt flats", "Pine lake"],
    "nautical": ["Tall ship", "Rope and cleat", "Red buoy", "Fishing fleet", "Storm sails", "Dry dock", "Pier at noon"],
}
PHOTOGRAPHERS = ["Ada Lindqvist", "Bram de Vries", "Chiara Russo", "Dev Patel", "Elif Kaya", "Femi Adeyemi", "Greta Novak", "Hiro Tanaka"]
PALETTES = {
    "animals": ("#8c5a2b", "#e8c28f"),
    "architecture": ("#3b4a5a", "#c9d3dc"),
    "cars": ("#8e1b1b", "#f2b3a0"),
    "cities": ("#25304f", "#f0b75e"),
    "flowers": ("#b0306a", "#ffd6e5"),
    "landscape": ("#2f5d3a", "#bfe0b0"),
    "nautical": ("#12456e", "#a8d4f0"),
}


def svg(n, category, title):
    rnd = random.Random(n)
    dark, light = PALETTES[category]
    shapes = []
    for _ in range(6):
        x, y, r = rnd.randint(20, 620), rnd.randint(20, 460), rnd.randint(30, 140)
        op = rnd.uniform(0.15, 0.5)
        shapes.append(f'<circle cx="{x}" cy="{y}" r="{r}" fill="{light}" opacity="{op:.2f}"/>')
    pts = " ".join(f"{x},{int(360 + 60 * math.sin(x / 90 + n))}" for x in range(0, 641, 40))
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 640 480" width="640" height="480" role="img" '
        f'aria-label="{title}">'
        f'<defs><linearGradient id="g" x1="0" y1="0" x2="0" y2="1"><stop offset="0" stop-color="{light}"/>'
        f'<stop offset="1" stop-color="{dark}"/></linearGradient></defs>'
        '<rect width="640" height="480" fill="url(#g)"/>'
        + "".join(shapes)
        + f'<polygon points="0,480 {pts} 640,480" fill="{dark}" opacity="0.85"/>'
        "</svg>\n"
    )


def main():
    items = []
    n = 0
    for category, titles in CATEGORIES.items():
        for title in titles:
            n += 1
            item_id = f"demo-{n:03d}"
            image = f"/images/{item_id}.svg"
            with open(os.path.join(ROOT, "images", f"{item_id}.svg"), "w", encoding="utf-8") as f:
                f.write(svg(n, category, title))
            items.append({
                "id": item_id,
                "title": title,
                "image": image,
                "photographer": PHOTOGRAPHERS[n % len(PHOTOGRAPHERS)],
                "category": category,
            })
    with open(os.path.join(ROOT, "catalog", "demo.json"), "w", encoding="utf-8") as f:
        json.dump({"items": items}, f, indent=1)
        f.write("\n")
    print(f"wrote {len(items)} items")


if __name__ == "__main__":
    main()
