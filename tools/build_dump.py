#!/usr/bin/env python3
"""Builds a bench dump (bench/DUMPS.md) from a dataset's own files.

  build_dump.py snli-ve  --jsonl snli_ve_test.jsonl --flickr-images DIR --out DUMP
  build_dump.py esnli-ve --csv esnlive_test.csv   --flickr-images DIR --out DUMP
  build_dump.py coco     --captions captions_val2017.json --images DIR --out DUMP
  build_dump.py karpathy --dataset dataset_coco.json --images COCO_ROOT --split test --out DUMP

Images are linked into DUMP/images/ (absolute symbolic links) or, with --copy, copied. A row that
cannot become a sample (missing image, unknown label such as SNLI's "-", missing field, no
captions, duplicate id) is not written: it is counted by reason, listed in DUMP/build_report.json
and summed up on stderr. --strict turns any such row into a failure (exit status 1); so does a
build that writes no sample at all. Sources may start with a UTF-8 byte order mark.
"""

import argparse
import csv
import json
import os
import shutil
import sys
from collections import Counter

VE_LABELS = ("entailment", "neutral", "contradiction")


class BadRow(Exception):
    """A source row that cannot become a sample; the message is the reason."""

    def __init__(self, reason, detail=""):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class FatalInput(Exception):
    """The source file as a whole is unusable."""


def flickr_image(images_dir, flickr_id):
    name = str(flickr_id).strip()
    if not name:
        raise BadRow("missing field", "empty Flickr30k id")
    if not name.endswith(".jpg"):
        name += ".jpg"
    return os.path.join(images_dir, name)


def ve_label(value):
    label = str(value).strip().lower()
    if label not in VE_LABELS:
        raise BadRow("unknown label", "label %r" % value)
    return label


def required(row, key):
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise BadRow("missing field", "field %r missing or empty" % key)
    return value


def optional_text(row, key):
    """The field as a string, or None when absent or blank (the dump has no empty premise)."""
    value = row.get(key)
    if value is None or not str(value).strip():
        return None
    return str(value)


# "utf-8-sig" drops a leading byte order mark, which would otherwise glue itself to the first CSV
# column's name (every id became line<N>) or make the first JSON line unreadable.
SOURCE_ENCODING = "utf-8-sig"


# Each reader yields (row reference, sample dict or BadRow). A sample dict holds "id",
# "source_image" and the task's fields.


def read_snli_ve(args):
    with open(args.jsonl, encoding=SOURCE_ENCODING) as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise BadRow("bad JSON", str(e))
                if not isinstance(row, dict):
                    raise BadRow("bad JSON", "line is not a JSON object")
                sample = {
                    "id": str(row.get("pairID") or "line%d" % line_number),
                    "source_image": flickr_image(args.flickr_images,
                                                 required(row, "Flickr30K_ID")),
                    "hypothesis": str(required(row, "sentence2")),
                    "label": ve_label(required(row, "gold_label")),
                }
                premise = optional_text(row, "sentence1")  # optional in the dump (DUMPS.md)
                if premise is not None:
                    sample["premise"] = premise
                yield "line %d" % line_number, sample
            except BadRow as bad:
                yield "line %d" % line_number, bad


def read_esnli_ve(args):
    with open(args.csv, encoding=SOURCE_ENCODING, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"Flickr30kID", "hypothesis", "gold_label"} - set(reader.fieldnames or [])
        if missing:
            raise FatalInput("%s: the header lacks column(s) %s"
                             % (args.csv, ", ".join(sorted(missing))))
        for row in reader:
            where = "line %d" % reader.line_num
            try:
                if None in row:
                    raise BadRow("bad CSV row", "more fields than the header")
                yield where, {
                    "id": str(row.get("pairID") or "line%d" % reader.line_num),
                    "source_image": flickr_image(args.flickr_images, required(row, "Flickr30kID")),
                    "hypothesis": required(row, "hypothesis"),
                    "label": ve_label(required(row, "gold_label")),
                }
            except BadRow as bad:
                yield where, bad


def load_json(path):
    try:
        with open(path, encoding=SOURCE_ENCODING) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise FatalInput("%s: not valid JSON: %s" % (path, e))


def read_coco(args):
    data = load_json(args.captions)
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise FatalInput("%s: not a COCO captions file (needs \"images\" and \"annotations\")"
                         % args.captions)
    captions = {}
    for index, annotation in enumerate(data["annotations"]):
        if not isinstance(annotation, dict):
            yield "annotations[%d]" % index, BadRow("bad JSON", "annotation is not an object")
            continue
        captions.setdefault(annotation.get("image_id"), []).append(annotation.get("caption"))
    known = set()
    for index, image in enumerate(data["images"]):
        where = "images[%d]" % index
        try:
            if not isinstance(image, dict):
                raise BadRow("bad JSON", "image entry is not an object")
            image_id = required(image, "id")
            known.add(image_id)
            references = [c for c in captions.get(image_id, []) if isinstance(c, str) and c.strip()]
            if not references:
                raise BadRow("no captions", "image id %s has no caption" % image_id)
            yield where, {
                "id": str(image_id),
                "source_image": os.path.join(args.images, required(image, "file_name")),
                "references": references,
            }
        except BadRow as bad:
            yield where, bad
    for image_id in sorted(captions.keys() - known, key=str):
        yield "annotations", BadRow("caption of unknown image",
                                    "image_id %s is not in \"images\"" % image_id)


def read_karpathy(args):
    data = load_json(args.dataset)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise FatalInput("%s: not a Karpathy split file (needs an \"images\" list)" % args.dataset)
    for index, image in enumerate(data["images"]):
        where = "images[%d]" % index
        if not isinstance(image, dict):
            yield where, BadRow("bad JSON", "image entry is not an object")
            continue
        if image.get("split") != args.split:
            continue
        try:
            image_id = image.get("cocoid", image.get("imgid"))
            if image_id is None:
                raise BadRow("missing field", "neither \"cocoid\" nor \"imgid\"")
            references = [s.get("raw") for s in image.get("sentences", [])
                          if isinstance(s.get("raw"), str) and s.get("raw").strip()]
            if not references:
                raise BadRow("no captions", "image %s has no sentence" % image_id)
            yield where, {
                "id": str(image_id),
                "source_image": os.path.join(args.images, image.get("filepath", ""),
                                             required(image, "filename")),
                "references": references,
            }
        except BadRow as bad:
            yield where, bad


class DumpWriter:
    def __init__(self, out_dir, copy):
        if os.path.exists(out_dir) and os.listdir(out_dir):
            raise FatalInput("%s exists and is not empty; give a new directory" % out_dir)
        self.created = not os.path.exists(out_dir)
        self.out_dir = out_dir
        self.copy = copy
        os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
        self.manifest = open(os.path.join(out_dir, "manifest.jsonl"), "w", encoding="utf-8")
        self.relpath_of_source = {}
        self.used_names = set()
        self.ids = set()
        self.written = 0

    def image(self, source):
        """The dump-relative path of `source`, linked or copied in once."""
        source = os.path.abspath(source)
        if source in self.relpath_of_source:
            return self.relpath_of_source[source]
        if not os.path.isfile(source):
            raise BadRow("missing image", source)
        name = os.path.basename(source)
        stem, ext = os.path.splitext(name)
        suffix = 1
        while name in self.used_names:  # same file name from another folder
            name = "%s_%d%s" % (stem, suffix, ext)
            suffix += 1
        self.used_names.add(name)
        relpath = "images/" + name
        target = os.path.join(self.out_dir, relpath)
        if self.copy:
            shutil.copyfile(source, target)
        else:
            os.symlink(source, target)
        self.relpath_of_source[source] = relpath
        return relpath

    def write(self, sample):
        if sample["id"] in self.ids:
            raise BadRow("duplicate id", "id %r" % sample["id"])
        line = {"id": sample["id"], "image": self.image(sample["source_image"])}
        line.update((k, v) for k, v in sample.items() if k not in ("id", "source_image"))
        self.ids.add(sample["id"])
        self.manifest.write(json.dumps(line, ensure_ascii=False) + "\n")
        self.written += 1

    def close(self):
        self.manifest.close()


READERS = {
    "snli-ve": read_snli_ve,
    "esnli-ve": read_esnli_ve,
    "coco": read_coco,
    "karpathy": read_karpathy,
}


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError("needs a whole number of at least 1, got %r" % text)
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    formats = parser.add_subparsers(dest="format", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", required=True, help="dump directory to create (new or empty)")
    common.add_argument("--copy", action="store_true", help="copy images instead of linking them")
    common.add_argument("--limit", type=positive_int, help="stop after this many samples")
    common.add_argument("--strict", action="store_true", help="fail if any row is bad")
    p = formats.add_parser("snli-ve", parents=[common], help="SNLI-VE snli_ve_*.jsonl")
    p.add_argument("--jsonl", required=True)
    p.add_argument("--flickr-images", required=True, help="folder of Flickr30k <id>.jpg")
    p = formats.add_parser("esnli-ve", parents=[common], help="e-SNLI-VE esnlive_*.csv")
    p.add_argument("--csv", required=True)
    p.add_argument("--flickr-images", required=True, help="folder of Flickr30k <id>.jpg")
    p = formats.add_parser("coco", parents=[common], help="COCO captions_*.json")
    p.add_argument("--captions", required=True)
    p.add_argument("--images", required=True, help="folder of the json's file_name images")
    p = formats.add_parser("karpathy", parents=[common], help="Karpathy dataset_coco.json")
    p.add_argument("--dataset", required=True)
    p.add_argument("--images", required=True, help="COCO root holding <filepath>/<filename>")
    p.add_argument("--split", default="test", choices=["train", "restval", "val", "test"])
    return parser.parse_args(argv)


def build(args):
    source = getattr(args, "jsonl", None) or getattr(args, "csv", None) or \
        getattr(args, "captions", None) or args.dataset
    writer = DumpWriter(args.out, args.copy)
    bad_rows = []
    rows = 0
    try:
        for where, item in READERS[args.format](args):
            if args.limit is not None and writer.written >= args.limit:
                break
            rows += 1
            try:
                if isinstance(item, BadRow):
                    raise item
                writer.write(item)
            except BadRow as bad:
                bad_rows.append({"row": where, "reason": bad.reason, "detail": bad.detail})
    except (FatalInput, OSError):
        writer.close()
        if writer.created:  # leave no half-built dump behind
            shutil.rmtree(args.out)
        raise
    writer.close()
    by_reason = Counter(b["reason"] for b in bad_rows)
    report = {
        "format": args.format,
        "source": os.path.abspath(source),
        "rows": rows,
        "written": writer.written,
        "bad_rows": len(bad_rows),
        "bad_by_reason": dict(sorted(by_reason.items())),
        "bad": bad_rows,
    }
    with open(os.path.join(args.out, "build_report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1, ensure_ascii=False)
    summary = "build_dump: %d samples written to %s" % (writer.written, args.out)
    if bad_rows:
        summary += "; %d bad rows not written (%s), listed in build_report.json" % (
            len(bad_rows), ", ".join("%d %s" % (n, r) for r, n in sorted(by_reason.items())))
    print(summary, file=sys.stderr)
    if writer.written == 0:  # a dump without samples is no dump: say so now, not at bench time
        why = ("every row is bad, see %s" % os.path.join(args.out, "build_report.json")
               if rows else "the source has no rows")
        print("build_dump: no sample written from %s: %s" % (source, why), file=sys.stderr)
        return 1
    return 1 if args.strict and bad_rows else 0


def main(argv=None):
    args = parse_args(argv)
    try:
        return build(args)
    except (FatalInput, OSError) as e:
        print("build_dump: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
