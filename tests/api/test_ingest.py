"""Dataset ingest: every bad input is refused with a precise 4xx and leaves nothing behind;
good inputs in each upload format become the normalized stored form with correct statistics."""

from __future__ import annotations

import io
import json
import stat
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from api.ingest import IngestLimits, IngestResult, detect_format, ingest_dataset
from core.errors import AppError

# ---------------------------------------------------------------------------------------------
# builders of upload files


def text_csv(rows: list[tuple[str, str]], header: str = "text,labels") -> bytes:
    lines = [header, *(f"{text},{labels}" for text, labels in rows)]
    return ("\n".join(lines) + "\n").encode("utf-8")


def good_rows(n: int = 12) -> list[tuple[str, str]]:
    cycle = ["a", "a|b", "b", "b|c", "c", "a|c"]
    return [(f"sample text {i}", cycle[i % len(cycle)]) for i in range(n)]


def csv_with_line(line: bytes, at_line: int = 3) -> bytes:
    """A valid 12-row CSV whose physical line `at_line` (1-based, header is 1) is replaced."""
    lines = text_csv(good_rows()).split(b"\n")
    lines[at_line - 1] = line
    return b"\n".join(lines)


def jsonl(objects: list[object]) -> bytes:
    return b"".join(json.dumps(obj).encode() + b"\n" for obj in objects)


def good_objects(n: int = 12) -> list[object]:
    return [{"text": f"sample {i}", "labels": ["x", "y"][: 1 + i % 2]} for i in range(n)]


def jsonl_with_line(line: bytes, at_line: int = 3) -> bytes:
    lines = jsonl(good_objects()).split(b"\n")
    lines[at_line - 1] = line
    return b"\n".join(lines)


def png(size: tuple[int, int] = (8, 8), value: int = 0, fmt: str = "PNG") -> bytes:
    image = Image.new("L" if fmt != "JPEG" else "RGB", size, color=value if fmt != "JPEG" else (value,) * 3)
    for x in range(size[0]):
        image.putpixel((x, x % size[1]), 255 if fmt != "JPEG" else (255, 255, 255))
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming huge dimensions, with almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


Member = tuple[str, bytes] | tuple[zipfile.ZipInfo, bytes]


def make_zip(members: list[Member], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # duplicate names are a case under test
        with zipfile.ZipFile(out, "w", compression=compression) as archive:
            for name, data in members:
                archive.writestr(name, data)
    return out.getvalue()


def image_members(n: int = 12) -> list[Member]:
    cycle = ["cat", "cat|dog", "dog", "bird|dog", "bird"]
    rows = [f"img_{i:03d}.png,{cycle[i % len(cycle)]}" for i in range(n)]
    labels_csv = ("filename,labels\n" + "\n".join(rows) + "\n").encode()
    return [("labels.csv", labels_csv), *((f"img_{i:03d}.png", png(value=i)) for i in range(n))]


def zip_with(
    replace: dict[str, bytes] | None = None, extra: list[Member] | None = None, drop: tuple[str, ...] = ()
) -> Callable[[], bytes]:
    def build() -> bytes:
        members = [
            (name, (replace or {}).get(name, data)) for name, data in image_members() if name not in drop
        ]
        return make_zip([*members, *(extra or [])])  # type: ignore[list-item]

    return build


def labels_csv_with(rows: list[str]) -> bytes:
    return ("filename,labels\n" + "\n".join(rows) + "\n").encode()


def symlink_member(name: str, target: str) -> Member:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return (info, target.encode())


def mark_encrypted(data: bytes, member: str) -> bytes:
    """Set the 'encrypted' flag bit on one member in both its local and central headers."""
    raw = bytearray(data)
    name = member.encode()
    for signature, flag_offset, name_offset in ((b"PK\x03\x04", 6, 30), (b"PK\x01\x02", 8, 46)):
        start = 0
        while (pos := raw.find(signature, start)) >= 0:
            if raw[pos + name_offset : pos + name_offset + len(name)] == name:
                raw[pos + flag_offset] |= 0x1
            start = pos + 4
    return bytes(raw)


def corrupt_stored_member(member: str) -> bytes:
    """A ZIP whose stored member's bytes no longer match its CRC."""
    members = image_members()
    data = make_zip(members, compression=zipfile.ZIP_STORED)
    original = dict(members)[member]  # type: ignore[arg-type]
    pos = data.index(original) + len(original) // 2
    return data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1 :]


# ---------------------------------------------------------------------------------------------
# the table of bad inputs


@dataclass
class Bad:
    id: str
    filename: str
    build: Callable[[], bytes]
    code: str
    mentions: tuple[str, ...]
    status: int = 422
    limits: IngestLimits = field(default_factory=IngestLimits)


BAD_INPUTS = [
    # formats
    Bad("unknown extension", "data.xlsx", lambda: b"PK", "unsupported_format", ("data.xlsx",), status=415),
    Bad("no extension", "data", lambda: b"text,labels\n", "unsupported_format", ("'data'",), status=415),
    Bad("zip that is not a zip", "d.zip", lambda: b"text,labels\n", "invalid_zip", ("not a readable ZIP",)),
    # text CSV
    Bad(
        "csv missing column",
        "d.csv",
        lambda: text_csv(good_rows(), "text,tags"),
        "invalid_csv_header",
        ("line 1", "'labels'", "'tags'"),
    ),
    Bad(
        "csv column twice",
        "d.csv",
        lambda: text_csv(good_rows(), "text,text,labels"),
        "invalid_csv_header",
        ("line 1", "twice"),
    ),
    Bad("csv empty file", "d.csv", lambda: b"", "invalid_csv_header", ("empty",)),
    Bad(
        "csv invalid utf-8",
        "d.csv",
        lambda: csv_with_line(b"caf\xff,a", 4),
        "invalid_encoding",
        ("line 4", "0xff", "UTF-8"),
    ),
    Bad(
        "csv latin-1",
        "d.csv",
        lambda: csv_with_line("café,a".encode("latin-1"), 7),
        "invalid_encoding",
        ("line 7",),
    ),
    Bad("csv empty text", "d.csv", lambda: csv_with_line(b"   ,a", 3), "empty_text", ("line 3",)),
    Bad(
        "csv extra field",
        "d.csv",
        lambda: csv_with_line(b"x,a,oops", 5),
        "invalid_csv",
        ("line 5", "3 fields"),
    ),
    Bad("csv bad quoting", "d.csv", lambda: csv_with_line(b'"abc"def,a', 3), "invalid_csv", ("line 3",)),
    Bad(
        "csv empty label name",
        "d.csv",
        lambda: csv_with_line(b"x,a||b", 6),
        "invalid_label",
        ("line 6", "empty"),
    ),
    Bad(
        "csv label too long",
        "d.csv",
        lambda: csv_with_line(b"x," + b"L" * 101, 3),
        "invalid_label",
        ("line 3", "100 characters"),
    ),
    Bad(
        "csv text too long",
        "d.csv",
        lambda: csv_with_line(b"y" * 60 + b",a", 3),
        "text_too_long",
        ("line 3", "60 characters"),
        limits=IngestLimits(max_text_chars=50),
    ),
    Bad(
        "csv line too long",
        "d.csv",
        lambda: csv_with_line(b"z" * 300 + b",a", 9),
        "line_too_long",
        ("line 9",),
        limits=IngestLimits(max_line_bytes=100),
    ),
    Bad(
        "csv too few samples", "d.csv", lambda: text_csv(good_rows(5)), "too_few_samples", ("5 samples", "10")
    ),
    Bad(
        "csv one label only",
        "d.csv",
        lambda: text_csv([(f"t{i}", "only") for i in range(12)]),
        "too_few_labels",
        ("1 distinct", "'only'"),
    ),
    Bad(
        "csv too many labels",
        "d.csv",
        lambda: text_csv([(f"t{i}", f"l{i}") for i in range(12)]),
        "too_many_labels",
        ("line 5", "3 labels"),
        limits=IngestLimits(max_labels=3),
    ),
    # text JSONL
    Bad(
        "jsonl malformed",
        "d.jsonl",
        lambda: jsonl_with_line(b'{"text": "x", "labels": [', 3),
        "invalid_json",
        ("line 3", "not valid JSON"),
    ),
    Bad(
        "jsonl not an object",
        "d.jsonl",
        lambda: jsonl_with_line(b"[1, 2]", 4),
        "invalid_json",
        ("line 4", "a list"),
    ),
    Bad(
        "jsonl text not a string",
        "d.jsonl",
        lambda: jsonl_with_line(b'{"text": 5, "labels": []}', 3),
        "invalid_json",
        ("line 3", "'text' must be a string", "a number"),
    ),
    Bad(
        "jsonl no text",
        "d.jsonl",
        lambda: jsonl_with_line(b'{"labels": ["x"]}', 2),
        "invalid_json",
        ("line 2", "no 'text'"),
    ),
    Bad(
        "jsonl labels a string",
        "d.jsonl",
        lambda: jsonl_with_line(b'{"text": "t", "labels": "x"}', 3),
        "invalid_json",
        ("line 3", "list of strings"),
    ),
    Bad(
        "jsonl labels not strings",
        "d.jsonl",
        lambda: jsonl_with_line(b'{"text": "t", "labels": [1]}', 3),
        "invalid_json",
        ("line 3", "a number"),
    ),
    Bad(
        "jsonl no labels",
        "d.jsonl",
        lambda: jsonl_with_line(b'{"text": "t"}', 8),
        "invalid_json",
        ("line 8", "'labels'"),
    ),
    Bad(
        "jsonl empty text",
        "d.jsonl",
        lambda: jsonl_with_line(b'{"text": " \\n ", "labels": []}', 3),
        "empty_text",
        ("line 3",),
    ),
    Bad(
        "jsonl invalid utf-8",
        "d.jsonl",
        lambda: jsonl_with_line(b'{"text": "\xc3\x28", "labels": []}', 5),
        "invalid_encoding",
        ("line 5",),
    ),
    Bad(
        "jsonl utf-16",
        "d.jsonl",
        lambda: jsonl(good_objects()).decode().encode("utf-16"),
        "invalid_encoding",
        ("line 1",),
    ),
    Bad(
        "jsonl too few labels",
        "d.jsonl",
        lambda: jsonl([{"text": f"t{i}", "labels": []} for i in range(12)]),
        "too_few_labels",
        ("0 distinct",),
    ),
    # ZIP: members checked before extraction
    Bad(
        "zip slip",
        "d.zip",
        zip_with(extra=[("../evil.png", png())]),
        "unsafe_zip_member",
        ("'../evil.png'", ".."),
    ),
    Bad(
        "zip slip nested",
        "d.zip",
        zip_with(extra=[("a/../../evil.png", png())]),
        "unsafe_zip_member",
        ("'a/../../evil.png'",),
    ),
    Bad(
        "zip absolute path",
        "d.zip",
        zip_with(extra=[("/etc/evil.png", png())]),
        "unsafe_zip_member",
        ("'/etc/evil.png'", "absolute"),
    ),
    Bad(
        "zip backslash path",
        "d.zip",
        zip_with(extra=[("..\\evil.png", png())]),
        "unsafe_zip_member",
        ("backslash",),
    ),
    Bad(
        "zip drive letter",
        "d.zip",
        zip_with(extra=[("C:/evil.png", png())]),
        "unsafe_zip_member",
        ("drive letter",),
    ),
    Bad(
        "zip symlink",
        "d.zip",
        zip_with(extra=[symlink_member("link.png", "/etc/passwd")]),
        "unsafe_zip_member",
        ("'link.png'", "symbolic link"),
    ),
    Bad(
        "zip duplicate member",
        "d.zip",
        zip_with(extra=[("img_001.png", png())]),
        "unsafe_zip_member",
        ("'img_001.png'", "twice"),
    ),
    Bad(
        "zip bomb by ratio",
        "d.zip",
        zip_with(extra=[("zeros.png", bytes(4 * 1024 * 1024))]),
        "zip_too_large",
        ("'zeros.png'", "ZIP bomb"),
    ),
    Bad(
        "zip total too large",
        "d.zip",
        zip_with(),
        "zip_too_large",
        ("expands to more than 1000",),
        limits=IngestLimits(max_total_uncompressed=1000),
    ),
    Bad(
        "zip too many members",
        "d.zip",
        zip_with(),
        "too_many_members",
        ("13 members", "at most 5"),
        limits=IngestLimits(max_members=5),
    ),
    Bad(
        "zip encrypted member",
        "d.zip",
        lambda: mark_encrypted(zip_with()(), "img_004.png"),
        "invalid_zip",
        ("'img_004.png'", "encrypted"),
    ),
    # ZIP: labels.csv against the members
    Bad(
        "zip without labels.csv",
        "d.zip",
        zip_with(drop=("labels.csv",)),
        "missing_labels_file",
        ("labels.csv",),
    ),
    Bad(
        "zip labels.csv in a folder",
        "d.zip",
        lambda: make_zip([(f"data/{name}", data) for name, data in image_members()]),  # type: ignore[misc]
        "missing_labels_file",
        ("'data/labels.csv'",),
    ),
    Bad(
        "zip labels.csv bad header",
        "d.zip",
        zip_with(replace={"labels.csv": b"file,labels\nimg_000.png,cat\n"}),
        "invalid_csv_header",
        ("labels.csv line 1", "'filename'"),
    ),
    Bad(
        "zip labels.csv names missing file",
        "d.zip",
        zip_with(
            replace={
                "labels.csv": labels_csv_with(
                    [f"img_{i:03d}.png,cat|dog" for i in range(12)] + ["ghost.png,cat"]
                )
            }
        ),
        "missing_image",
        ("labels.csv line 14", "'ghost.png'"),
    ),
    Bad(
        "zip unlisted image",
        "d.zip",
        zip_with(extra=[("extra.png", png())]),
        "unlisted_file",
        ("'extra.png'", "not listed"),
    ),
    Bad(
        "zip duplicate entry",
        "d.zip",
        zip_with(
            replace={
                "labels.csv": labels_csv_with(
                    [f"img_{i:03d}.png,cat|dog" for i in range(12)] + ["img_003.png,dog"]
                )
            }
        ),
        "duplicate_entry",
        ("labels.csv line 14", "line 5"),
    ),
    Bad(
        "zip lists a non-image",
        "d.zip",
        zip_with(
            replace={
                "labels.csv": labels_csv_with(
                    [f"img_{i:03d}.png,cat|dog" for i in range(12)] + ["notes.txt,cat"]
                )
            },
            extra=[("notes.txt", b"hello")],
        ),
        "invalid_image",
        ("labels.csv line 14", "'notes.txt'"),
    ),
    Bad(
        "zip bad label",
        "d.zip",
        zip_with(replace={"labels.csv": labels_csv_with([f"img_{i:03d}.png,cat| |dog" for i in range(12)])}),
        "invalid_label",
        ("labels.csv line 2",),
    ),
    Bad(
        "zip too few samples",
        "d.zip",
        lambda: make_zip(
            [("labels.csv", labels_csv_with(["a.png,cat", "b.png,dog"])), ("a.png", png()), ("b.png", png())]
        ),
        "too_few_samples",
        ("2 samples",),
    ),
    # ZIP: image content, decoded only after the checks above
    Bad(
        "truncated png",
        "d.zip",
        zip_with(replace={"img_007.png": png()[:40]}),
        "invalid_image",
        ("'img_007.png'",),
    ),
    Bad(
        "garbage named png",
        "d.zip",
        zip_with(replace={"img_002.png": b"not an image at all"}),
        "invalid_image",
        ("'img_002.png'",),
    ),
    Bad(
        "gif named png",
        "d.zip",
        zip_with(replace={"img_002.png": png(fmt="GIF")}),
        "invalid_image",
        ("'img_002.png'", "PNG, JPEG or WebP"),
    ),
    Bad(
        "decompression bomb png",
        "d.zip",
        zip_with(replace={"img_005.png": png_header_only(100_000, 100_000)}),
        "image_too_large",
        ("'img_005.png'",),
    ),
    Bad(
        "png over pixel limit",
        "d.zip",
        zip_with(replace={"img_005.png": png_header_only(8000, 6000)}),
        "image_too_large",
        ("'img_005.png'", "8000x6000"),
    ),
    Bad(
        "png over a lowered pixel limit",
        "d.zip",
        zip_with(replace={"img_009.png": png((20, 20))}),
        "image_too_large",
        ("'img_009.png'", "20x20"),
        limits=IngestLimits(max_image_pixels=100),
    ),
    Bad(
        "corrupt member",
        "d.zip",
        lambda: corrupt_stored_member("img_006.png"),
        "invalid_zip",
        ("'img_006.png'", "corrupt"),
    ),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[case.id for case in BAD_INPUTS])
def test_bad_input_is_refused_precisely_and_leaves_nothing(case: Bad, tmp_path: Path) -> None:
    upload = tmp_path / "upload.bin"
    upload.write_bytes(case.build())
    datasets = tmp_path / "datasets"
    target = datasets / "ds-1"

    with pytest.raises(AppError) as caught:
        ingest_dataset(upload, case.filename, target, case.limits)

    error = caught.value
    assert (error.status, error.code) == (case.status, case.code), error.detail
    for fragment in case.mentions:
        assert fragment in error.detail, f"{fragment!r} not in {error.detail!r}"
    assert str(tmp_path) not in error.detail  # never a file system path
    assert not target.exists()
    assert not datasets.exists() or list(datasets.iterdir()) == []
    assert upload.exists()  # the caller owns the upload file


def test_failure_after_extraction_started_removes_extracted_images(tmp_path: Path) -> None:
    """The last image is bad: the first eleven were already extracted, and must be gone."""
    upload = tmp_path / "d.zip"
    upload.write_bytes(zip_with(replace={"img_011.png": b"broken"})())
    with pytest.raises(AppError, match=r"img_011\.png"):
        ingest_dataset(upload, "d.zip", tmp_path / "datasets" / "x")
    assert list((tmp_path / "datasets").iterdir()) == []


def test_empty_placeholder_directory_is_accepted_and_removed_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "datasets" / "x"
    target.mkdir(parents=True)
    upload = tmp_path / "d.csv"
    upload.write_bytes(b"text,labels\n")
    with pytest.raises(AppError):
        ingest_dataset(upload, "d.csv", target)
    assert not target.exists()


def test_non_empty_dataset_dir_is_a_caller_bug(tmp_path: Path) -> None:
    target = tmp_path / "x"
    target.mkdir()
    (target / "keep").write_text("mine")
    upload = tmp_path / "d.csv"
    upload.write_bytes(text_csv(good_rows()))
    with pytest.raises(FileExistsError):
        ingest_dataset(upload, "d.csv", target)
    assert (target / "keep").read_text() == "mine"


# ---------------------------------------------------------------------------------------------
# good inputs


def read_samples(dataset_dir: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (dataset_dir / "samples.jsonl").read_text("utf-8").splitlines()]


def test_csv_is_normalized_with_bom_crlf_quotes_and_extra_columns(tmp_path: Path) -> None:
    rows = [
        "id,Text , LABELS",
        '1,"Hello, world",greeting| polite |greeting',
        '2,"two\nlines",greeting',
        "3,  padded text  ,",
        *(f"{i},t{i},{'polite' if i % 2 else 'rude'}" for i in range(4, 13)),
    ]
    upload = tmp_path / "in.csv"
    upload.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode() + b"\r\n")
    result = ingest_dataset(upload, "My Data.CSV", tmp_path / "ds")

    samples = read_samples(tmp_path / "ds")
    assert samples[:3] == [
        {"text": "Hello, world", "labels": ["greeting", "polite"]},
        {"text": "two\nlines", "labels": ["greeting"]},
        {"text": "padded text", "labels": []},
    ]
    assert json.loads((tmp_path / "ds" / "labels.json").read_text()) == ["greeting", "polite", "rude"]
    assert result == IngestResult(
        modality="text",
        format="csv",
        num_samples=12,
        labels=["greeting", "polite", "rude"],
        label_counts={"greeting": 2, "polite": 5, "rude": 5},
        label_cardinality=round(12 / 12, 6),
        warnings=[
            "Label 'greeting' has only 2 samples; its metrics will be unreliable and it may be missing from "
            "the validation split (at least 5 recommended).",
            "1 of 12 samples have no label; they count as negatives for every label.",
            "Only about 2 samples go to validation (the default 20%); metrics, thresholds and calibration "
            "need at least 50: upload more samples or raise hyperparameters.val_fraction.",
            "2 labels ('polite', 'rude') will have fewer than 5 validation samples each (of the default "
            "20%); their thresholds keep the fallback and their metrics are noisy.",
        ],
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "in.csv"]  # no staging left over


def test_jsonl_is_normalized_and_blank_lines_skipped(tmp_path: Path) -> None:
    objects = [
        {"text": f"Ünïcode ✓ {i}", "labels": ["b", "a", "a"] if i % 3 else [" c "], "id": i}
        for i in range(11)
    ]
    upload = tmp_path / "in.jsonl"
    upload.write_bytes(b"\n".join(json.dumps(o, ensure_ascii=False).encode() for o in objects) + b"\n\n  \n")
    result = ingest_dataset(upload, "in.jsonl", tmp_path / "ds", limits=NO_SPLIT_NOTES)

    samples = read_samples(tmp_path / "ds")
    assert samples[0] == {"text": "Ünïcode ✓ 0", "labels": ["c"]}
    assert samples[1] == {"text": "Ünïcode ✓ 1", "labels": ["a", "b"]}
    assert (result.modality, result.format, result.num_samples) == ("text", "jsonl", 11)
    assert result.label_counts == {"a": 7, "b": 7, "c": 4}
    assert result.label_cardinality == round((7 + 7 + 4) / 11, 6)
    assert result.warnings == [
        "Label 'c' has only 4 samples; its metrics will be unreliable and it may be missing from "
        "the validation split (at least 5 recommended)."
    ]


#: Limits without the validation-split notes, for tests about the other warnings on tiny files.
NO_SPLIT_NOTES = IngestLimits(min_validation_samples=0, min_validation_positives=0)


def test_the_default_validation_split_is_judged_for_size_and_label_support(tmp_path: Path) -> None:
    rows = [(f"t{i}", "common" + ("|thin" if i % 10 == 0 else "")) for i in range(300)]
    rows += [(f"u{i}", "other") for i in range(300)]
    upload = tmp_path / "in.csv"
    upload.write_bytes(text_csv(rows))
    result = ingest_dataset(upload, "in.csv", tmp_path / "ds")
    # 600 samples leave about 120 for validation: enough; 'thin' (30 samples) expects 6 there.
    assert result.warnings == []
    upload.write_bytes(text_csv(rows[:200] + rows[300:360]))
    result = ingest_dataset(upload, "in.csv", tmp_path / "ds2")
    assert result.warnings == [
        "1 label ('thin') will have fewer than 5 validation samples each (of the default 20%); their "
        "thresholds keep the fallback and their metrics are noisy."
    ]


def test_label_on_every_sample_is_warned_about(tmp_path: Path) -> None:
    upload = tmp_path / "in.csv"
    upload.write_bytes(text_csv([(f"t{i}", f"all|{'x' if i % 2 else 'y'}") for i in range(10)]))
    result = ingest_dataset(upload, "in.csv", tmp_path / "ds", limits=NO_SPLIT_NOTES)
    assert result.warnings == ["Label 'all' is on every sample, so a model can learn nothing from it."]


def test_image_zip_is_extracted_to_the_normalized_form(tmp_path: Path) -> None:
    images = {
        "photos/a/one.png": png((10, 7), 3),
        "photos/b/two.jpg": png((9, 9), 80, fmt="JPEG"),
        "three.webp": png((6, 5), 40, fmt="WEBP"),
        **{f"more/m{i}.png": png((4, 4), i) for i in range(9)},
    }
    names = list(images)
    labels = ["sun|sky", "sky", " sea |sea"] + ["sun" if i % 2 else "sea|sky" for i in range(9)]
    members: list[Member] = [
        ("photos/", b""),  # directory entries are fine
        ("labels.csv", labels_csv_with([f"{n},{lab}" for n, lab in zip(names, labels, strict=True)])),
        *images.items(),
        ("__MACOSX/photos/._one.png", b"\0\5\26\7 resource fork"),  # Finder junk is ignored
        (".DS_Store", b"\0\0\0\1Bud1"),
    ]
    upload = tmp_path / "in.zip"
    upload.write_bytes(make_zip(members))
    result = ingest_dataset(upload, "in.zip", tmp_path / "ds", limits=NO_SPLIT_NOTES)

    ds = tmp_path / "ds"
    samples = read_samples(ds)
    assert samples[:3] == [
        {"image": "images/photos/a/one.png", "labels": ["sky", "sun"]},
        {"image": "images/photos/b/two.jpg", "labels": ["sky"]},
        {"image": "images/three.webp", "labels": ["sea"]},
    ]
    for name, data in images.items():
        assert (ds / "images" / name).read_bytes() == data
    stored = sorted(str(p.relative_to(ds)) for p in ds.rglob("*") if p.is_file())
    assert stored == sorted(["labels.json", "samples.jsonl", *(f"images/{n}" for n in images)])
    assert (result.modality, result.format, result.num_samples) == ("image", "zip", 12)
    assert result.labels == ["sea", "sky", "sun"]
    assert result.label_counts == {"sea": 6, "sky": 7, "sun": 5}
    assert result.label_cardinality == round(18 / 12, 6)
    assert result.warnings == []


def test_format_detection_is_by_extension_case_insensitive() -> None:
    assert [detect_format(n) for n in ("a.CSV", "b.jsonl", "c.Zip")] == ["csv", "jsonl", "zip"]
    with pytest.raises(AppError) as caught:
        detect_format("d.json")
    assert (caught.value.status, caught.value.code) == (415, "unsupported_format")
