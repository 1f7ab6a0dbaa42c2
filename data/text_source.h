// Where prepare-data's text comes from and how it is read. Finds the sources of each split (a PG-19
// root with train/ validation/ test/ folders of <book_id>.txt and an optional metadata.csv; a
// folder of .txt files; one .txt file; Pile-style JSONL, optionally .zst-compressed), and reads a
// book's text the way Python's open(path, encoding="utf-8", errors="replace").read() does
// (universal newlines, invalid UTF-8 replaced by U+FFFD), refusing text that is not a book (empty,
// NUL bytes, absurdly long lines) with a reason instead of an exception. Not tokenization.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace longtune::data {

enum class InputKind { kPg19, kTextFolder, kTextFile, kJsonl };
const char* to_string(InputKind kind);  // "pg19" | "txt_folder" | "txt_file" | "jsonl"

struct SourceFile {
  std::string relative_path;   // relative to the input root ("train/10005.txt"), sorted on this
  std::filesystem::path path;  // as opened
  uint64_t bytes = 0;          // stat size (0 if stat failed)
  int64_t mtime_ns = 0;        // stat mtime (0 if stat failed)
  bool readable = true;        // stat + access(R_OK) succeeded and it is a regular file
  bool jsonl = false;          // one {"text": ...} document per line (maybe zstd-compressed)
  std::string title;           // from metadata.csv, if any
};

struct SplitSources {
  std::string name;
  std::vector<SourceFile> files;
};

struct InputLayout {
  InputKind kind = InputKind::kTextFile;
  std::filesystem::path root;         // folder the relative paths are relative to
  std::vector<SplitSources> splits;   // in the order train, validation, test (PG-19) or the one split
  std::vector<std::string> warnings;  // e.g. a default split that is absent
};

// The stat of one source file; `readable` false (and sizes 0) when it is missing, not a regular file
// or not readable. `relative_path` is path relative to `root`.
SourceFile stat_source(const std::filesystem::path& path, const std::filesystem::path& root, bool jsonl);

// Lays out `input`. For a PG-19 root, `requested_splits` (empty: all of train/validation/test that
// exist) picks splits; a requested split that is absent is an error. Other inputs form one split
// named `split_name`. Throws longtune::Error naming the path if `input` is missing or holds no text.
InputLayout discover_inputs(const std::filesystem::path& input,
                            const std::vector<std::string>& requested_splits,
                            const std::string& split_name);

// PG-19 metadata.csv: book_id,title,year,url; no header; CSV quoting (titles contain commas).
// Returns book_id -> title; throws longtune::Error naming file:line on a malformed row.
std::map<std::string, std::string> read_metadata_csv(const std::filesystem::path& path);

// The outcome of reading one book.
struct TextDocument {
  std::string text;                   // cleaned UTF-8 (valid only when skip_reason is empty)
  std::string skip_reason;            // non-empty: not a usable book, and why
  bool retry_later = false;           // the failure may go away (I/O, permissions): do not record as done
  uint64_t invalid_utf8_replaced = 0; // maximal invalid subparts replaced by U+FFFD
  uint64_t newlines_converted = 0;    // CRLF / lone CR turned into LF
};

// Reads and cleans a .txt book. Never throws for bad content; skip_reason says what is wrong.
TextDocument read_text_document(const std::filesystem::path& path, uint64_t max_line_bytes);

// Text cleanup on bytes already in memory (what read_text_document applies).
TextDocument clean_text(std::string raw, uint64_t max_line_bytes);

// Replaces each maximal invalid UTF-8 subpart with U+FFFD as Python's "replace" handler does;
// returns the number of replacements.
uint64_t repair_utf8(std::string& text);

// Streams the documents of a JSONL file (.jsonl or .jsonl.zst): calls `on_document(index, text)`
// for each record's "text" string in order and `on_bad_record(line_number, reason)` for lines that
// are not a JSON object with a string "text". Throws longtune::Error naming the file for I/O or
// decompression failures.
void read_jsonl(const std::filesystem::path& path,
                const std::function<void(uint64_t index, std::string text)>& on_document,
                const std::function<void(uint64_t line_number, const std::string& reason)>& on_bad_record);

}  // namespace longtune::data
