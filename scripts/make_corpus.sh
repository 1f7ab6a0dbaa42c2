#!/usr/bin/env bash
# Builds the small embedded corpus used by the demo, the data tests and the benchmarks, without
# network access, from public-domain texts that Debian packages ship (scripts/setup.sh installs them):
#   bible-kjv    the King James Bible: one book per Bible book (66), as `bible` pretty-prints it
#   dict-devil   Ambrose Bierce, The Devil's Dictionary: split by headword initial into books
#   dict-jargon  The Jargon File 4.4.7: likewise
#
# Usage: scripts/make_corpus.sh OUT_DIR [LONGTUNE_BIN]
#
# OUT_DIR gets the PG-19 layout that `longtune prepare-data` reads:
#   OUT_DIR/{train,validation,test}/<book_id>.txt   UTF-8, LF line endings, prose lines
#   OUT_DIR/metadata.csv                            book_id,title,year,url (no header; RFC 4180 quoting)
# The split is fixed: test holds 6 books (two of them over 100 KB, for long-window evaluation),
# validation 4, train the rest. Output is byte-identical on every run. The script is idempotent: it
# builds into a temporary folder and renames it into place, and skips the build when OUT_DIR holds a
# complete corpus (OUT_DIR/.corpus-stamp records a hash of its content).
#
# With LONGTUNE_BIN (build/bin/longtune) it also trains the demo tokenizer on the train split:
#   OUT_DIR/tokenizer.model, OUT_DIR/tokenizer.vocab   (LLaMA-style SentencePiece BPE, 4096 pieces)
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 OUT_DIR [LONGTUNE_BIN]" >&2
  exit 2
fi
OUT_DIR="${1%/}"
LONGTUNE_BIN="${2:-}"
VERSION="longtune-corpus-v1"
STAMP="$OUT_DIR/.corpus-stamp"
export LC_ALL=C

log() { echo "[make_corpus] $*" >&2; }

content_hash() {  # hash of every corpus file, path and bytes, in a fixed order
  (cd "$1" && find train validation test metadata.csv -type f -print0 | sort -z |
    xargs -0 sha256sum) | sha256sum | cut -d' ' -f1
}

start=$(date +%s.%N)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$VERSION $(content_hash "$OUT_DIR" 2>/dev/null)" ]; then
  log "$OUT_DIR is complete, not rebuilding"
else
  for cmd in bible python3; do
    command -v "$cmd" >/dev/null || { echo "make_corpus: '$cmd' not found (run scripts/setup.sh)" >&2; exit 1; }
  done
  for f in /usr/share/dictd/devil.dict.dz /usr/share/dictd/jargon.dict.dz; do
    [ -r "$f" ] || { echo "make_corpus: $f not found (run scripts/setup.sh)" >&2; exit 1; }
  done

  mkdir -p "$(dirname "$OUT_DIR")"
  TMP="$(mktemp -d "$OUT_DIR.tmp.XXXXXX")"
  trap 'rm -rf "$TMP"' EXIT
  mkdir -p "$TMP/raw"

  # The 66 books in canonical order, by the abbreviation `bible` itself uses in its references.
  # Each book is printed pretty (chapter headings, numbered verses) and wrapped at 72 columns.
  bible -f 'Gen1:1-Rev22:21' | sed -E 's/^([0-9]?[A-Za-z]+)[0-9]+:[0-9]+ .*/\1/' | uniq >"$TMP/raw/books"
  n=$(wc -l <"$TMP/raw/books")
  [ "$n" -eq 66 ] || { echo "make_corpus: expected 66 Bible books from 'bible', got $n" >&2; exit 1; }
  i=0
  while read -r abbr; do
    i=$((i + 1))
    COLUMNS=80 bible -l72 "${abbr}1:1-${abbr}999:999" </dev/null >"$TMP/raw/bible-$(printf %02d "$i").txt"
  done <"$TMP/raw/books"

  python3 - "$TMP" <<'EOF'
import csv, gzip, os, re, sys

out = sys.argv[1]
raw = os.path.join(out, "raw")
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def b64(s):
    n = 0
    for c in s:
        n = n * 64 + B64.index(c)
    return n


def clean(text):
    """UTF-8 prose lines: LF endings, no trailing blanks, no leading/trailing blank lines."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return "\n".join(lines).strip("\n") + "\n"


books = []  # (id, title, year, url, text)

# King James Bible: 66 books, ids 10001..10066.
for i in range(1, 67):
    with open(os.path.join(raw, f"bible-{i:02d}.txt"), encoding="utf-8") as f:
        text = clean(f.read())
    name = re.sub(r" [0-9]+$", "", text.split("\n", 1)[0])
    books.append((10000 + i, f"The Holy Bible, King James Version: {name}", 1611,
                  f"debian:bible-kjv/{name.replace(' ', '_')}", text))


def dict_books(path, first_id, title, year, target, url):
    """Entries of a dictd database in file order, headers dropped, cut by initial into ~target bytes."""
    with gzip.open(path, "rb") as f:  # dictzip is gzip with random-access extras
        data = f.read()
    spans = set()
    with open(path.replace(".dict.dz", ".index"), encoding="utf-8") as f:
        for line in f:
            word, off, size = line.rstrip("\n").split("\t")
            if not word.replace("-", "").startswith("00database"):
                spans.add((b64(off), b64(size)))
    groups = {}  # initial -> entries
    for off, size in sorted(spans):
        entry = data[off:off + size].decode("utf-8").strip("\n")
        headword = entry.split("\n", 1)[0]
        initial = headword[0].upper() if headword[:1].isascii() and headword[:1].isalpha() else "A"  # symbols first
        groups.setdefault(initial, []).append(entry)
    chunks = []  # [first letter, last letter, entries]
    for letter in sorted(groups):
        if not chunks or sum(len(e) for e in chunks[-1][2]) >= target:
            chunks.append([letter, letter, []])
        chunks[-1][1] = letter
        chunks[-1][2] += groups[letter]
    if len(chunks) > 1 and sum(len(e) for e in chunks[-1][2]) < target // 2:  # no tiny tail book
        first, last, entries = chunks.pop()
        chunks[-1][1] = last
        chunks[-1][2] += entries
    result = []
    for first, last, entries in chunks:
        span = first if first == last else f"{first} to {last}"
        result.append((first_id + len(result), f"{title}, {span}", year, f"{url}#{first}-{last}",
                       clean("\n\n".join(entries))))
    return result


books += dict_books("/usr/share/dictd/devil.dict.dz", 20001, "The Devil's Dictionary", 1911, 36000,
                    "file:///usr/share/dictd/devil.dict.dz")
books += dict_books("/usr/share/dictd/jargon.dict.dz", 30001, "The Jargon File", 2003, 60000,
                    "file:///usr/share/dictd/jargon.dict.dz")

# Fixed split: test = two long Bible books + two short ones + one of each dictionary,
# validation = two Bible books + one of each dictionary, train = everything else.
by_title = {b[1]: b[0] for b in books}
bible = lambda name: by_title[f"The Holy Bible, King James Version: {name}"]
test = {bible("Isaiah"), bible("Luke"), bible("Ruth"), bible("Jonah"), 20002, 30003}
validation = {bible("Joshua"), bible("Mark"), 20004, 30006}
for split in ("train", "validation", "test"):
    os.makedirs(os.path.join(out, split))
for book_id, title, year, url, text in books:
    split = "test" if book_id in test else "validation" if book_id in validation else "train"
    with open(os.path.join(out, split, f"{book_id}.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
with open(os.path.join(out, "metadata.csv"), "w", encoding="utf-8", newline="") as f:
    writer = csv.writer(f, lineterminator="\n")
    for book_id, title, year, url, _ in books:
        writer.writerow([book_id, title, year, url])
EOF

  rm -rf "$TMP/raw"
  echo "$VERSION $(content_hash "$TMP")" >"$TMP/.corpus-stamp"
  chmod 755 "$TMP"
  if [ -e "$OUT_DIR" ]; then
    OLD="$(mktemp -d "$OUT_DIR.old.XXXXXX")"
    mv "$OUT_DIR" "$OLD/"
    mv "$TMP" "$OUT_DIR"
    rm -rf "$OLD"
  else
    mv "$TMP" "$OUT_DIR"
  fi
  trap - EXIT
fi

for split in train validation test; do
  log "$split: $(find "$OUT_DIR/$split" -name '*.txt' | wc -l) books, $(du -sb "$OUT_DIR/$split" | cut -f1) bytes"
done

if [ -n "$LONGTUNE_BIN" ]; then
  if [ -f "$OUT_DIR/tokenizer.model" ] && [ -f "$OUT_DIR/tokenizer.vocab" ]; then
    log "$OUT_DIR/tokenizer.model exists, not retraining"
  else
    # Trained under a temporary prefix and renamed, .model last: its presence means both are whole.
    rm -f "$OUT_DIR/.tokenizer.tmp.model" "$OUT_DIR/.tokenizer.tmp.vocab"
    "$LONGTUNE_BIN" tokenizer train --input "$OUT_DIR/train" --vocab-size 4096 --out "$OUT_DIR/.tokenizer.tmp"
    mv "$OUT_DIR/.tokenizer.tmp.vocab" "$OUT_DIR/tokenizer.vocab"
    mv "$OUT_DIR/.tokenizer.tmp.model" "$OUT_DIR/tokenizer.model"
    log "trained $OUT_DIR/tokenizer.model"
  fi
fi
log "done in $(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }') s"
