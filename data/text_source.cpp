#include "data/text_source.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/check.h"
#include "data/line_reader.h"

namespace longtune::data {
namespace fs = std::filesystem;

const char* to_string(InputKind kind) {
  switch (kind) {
    case InputKind::kPg19: return "pg19";
    case InputKind::kTextFolder: return "txt_folder";
    case InputKind::kTextFile: return "txt_file";
    case InputKind::kJsonl: return "jsonl";
  }
  return "?";
}

namespace {

const std::vector<std::string> kPg19Splits = {"train", "validation", "test"};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
bool is_jsonl_name(const std::string& name) {
  return ends_with(name, ".jsonl") || ends_with(name, ".jsonl.zst");
}

// Every *.txt (or JSONL) entry of a folder, not recursive; anything so named counts, so that a broken
// link or a folder named x.txt is reported as unreadable rather than silently ignored.
std::vector<SourceFile> list_folder(const fs::path& folder, const fs::path& root) {
  std::vector<SourceFile> sources;
  std::error_code error;
  fs::directory_iterator it(folder, error);
  LT_CHECK(!error, "{}: cannot list folder: {}", folder.string(), error.message());
  for (const fs::directory_entry& entry : it) {
    const std::string name = entry.path().filename().string();
    const bool jsonl = is_jsonl_name(name);
    if (!jsonl && !ends_with(name, ".txt")) continue;
    sources.push_back(stat_source(entry.path(), root, jsonl));
  }
  std::sort(sources.begin(), sources.end(),
            [](const SourceFile& a, const SourceFile& b) { return a.relative_path < b.relative_path; });
  return sources;
}

}  // namespace

SourceFile stat_source(const fs::path& path, const fs::path& root, bool jsonl) {
  SourceFile source;
  source.path = path;
  source.relative_path = path.lexically_relative(root).generic_string();
  source.jsonl = jsonl;
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0 || !S_ISREG(info.st_mode) || ::access(path.c_str(), R_OK) != 0) {
    source.readable = false;
    return source;
  }
  source.bytes = static_cast<uint64_t>(info.st_size);
  source.mtime_ns = static_cast<int64_t>(info.st_mtim.tv_sec) * 1000000000 + info.st_mtim.tv_nsec;
  return source;
}

InputLayout discover_inputs(const fs::path& input, const std::vector<std::string>& requested_splits,
                            const std::string& split_name) {
  std::error_code error;
  const fs::file_status status = fs::status(input, error);
  LT_CHECK(fs::exists(status), "--input {}: no such file or folder", input.string());
  InputLayout layout;
  if (fs::is_directory(status)) {
    layout.root = input;
    bool any_split_folder = false;
    for (const std::string& split : kPg19Splits) any_split_folder |= fs::is_directory(input / split);
    if (any_split_folder) {
      layout.kind = InputKind::kPg19;
      for (const std::string& split : requested_splits) {
        LT_CHECK(std::find(kPg19Splits.begin(), kPg19Splits.end(), split) != kPg19Splits.end(),
                 "--splits: unknown split '{}' (PG-19 splits are train, validation, test)", split);
        LT_CHECK(fs::is_directory(input / split), "{}: split '{}' requested but {}/ does not exist",
                 input.string(), split, (input / split).string());
      }
      std::map<std::string, std::string> titles;
      if (fs::exists(input / "metadata.csv")) titles = read_metadata_csv(input / "metadata.csv");
      for (const std::string& split : kPg19Splits) {
        const bool wanted = requested_splits.empty() ||
            std::find(requested_splits.begin(), requested_splits.end(), split) != requested_splits.end();
        if (!wanted) continue;
        if (!fs::is_directory(input / split)) {
          layout.warnings.push_back(
              fmt::format("{}: no {}/ split folder; preparing the others", input.string(), split));
          continue;
        }
        SplitSources sources{split, list_folder(input / split, input)};
        for (SourceFile& file : sources.files) {
          const auto title = titles.find(file.path.stem().string());
          if (title != titles.end()) file.title = title->second;
        }
        if (sources.files.empty())
          layout.warnings.push_back(fmt::format("{}: split {}/ holds no .txt files", input.string(), split));
        layout.splits.push_back(std::move(sources));
      }
      return layout;
    }
    LT_CHECK(requested_splits.empty(), "--splits needs a PG-19 root (train/, validation/, test/); {} has none",
             input.string());
    layout.kind = InputKind::kTextFolder;
    SplitSources sources{split_name, list_folder(input, input)};
    LT_CHECK(!sources.files.empty(), "{}: folder holds no .txt or .jsonl[.zst] files", input.string());
    if (std::all_of(sources.files.begin(), sources.files.end(), [](const SourceFile& f) { return f.jsonl; }))
      layout.kind = InputKind::kJsonl;
    layout.splits.push_back(std::move(sources));
    return layout;
  }
  LT_CHECK(requested_splits.empty(), "--splits needs a PG-19 root folder; {} is a file", input.string());
  const bool jsonl = is_jsonl_name(input.filename().string());
  layout.kind = jsonl ? InputKind::kJsonl : InputKind::kTextFile;
  layout.root = input.has_parent_path() ? input.parent_path() : fs::path(".");
  SourceFile source = stat_source(input, layout.root, jsonl);
  LT_CHECK(source.readable, "--input {}: not a readable regular file", input.string());
  layout.splits.push_back(SplitSources{split_name, {std::move(source)}});
  return layout;
}

std::map<std::string, std::string> read_metadata_csv(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  LT_CHECK(in.good(), "{}: cannot open", path.string());
  std::map<std::string, std::string> titles;
  std::string line;
  int64_t line_number = 0;
  std::vector<std::string> fields;
  std::string field;
  bool in_quotes = false;
  int64_t row_start = 1;
  while (std::getline(in, line)) {
    ++line_number;
    if (!in_quotes) {
      fields.clear();
      field.clear();
      row_start = line_number;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty()) continue;
    } else {
      field.push_back('\n');
    }
    for (size_t i = 0; i < line.size(); ++i) {
      const char c = line[i];
      if (in_quotes) {
        if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
          field.push_back('"');
          ++i;
        } else if (c == '"') {
          in_quotes = false;
        } else {
          field.push_back(c);
        }
      } else if (c == '"') {
        in_quotes = true;
      } else if (c == ',') {
        fields.push_back(std::move(field));
        field.clear();
      } else {
        field.push_back(c);
      }
    }
    if (in_quotes) continue;  // a quoted field spans lines
    fields.push_back(std::move(field));
    field.clear();
    LT_CHECK(fields.size() == 4, "{}:{}: expected 4 columns (book_id,title,year,url), found {}",
             path.string(), row_start, fields.size());
    titles[fields[0]] = fields[1];
  }
  LT_CHECK(!in_quotes, "{}:{}: unterminated quoted field", path.string(), row_start);
  return titles;
}

uint64_t repair_utf8(std::string& text) {
  // Fast path: valid text is returned untouched.
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  std::string out;
  uint64_t replaced = 0;
  size_t copied_until = 0;
  size_t i = 0;
  auto replace = [&](size_t begin, size_t end) {
    if (replaced == 0) out.reserve(n + 16);
    out.append(text, copied_until, begin - copied_until);
    out.append("\xEF\xBF\xBD");
    copied_until = end;
    ++replaced;
  };
  while (i < n) {
    const unsigned char lead = bytes[i];
    if (lead < 0x80) {
      ++i;
      continue;
    }
    int continuation = 0;
    unsigned char low = 0x80, high = 0xBF;  // allowed range of the first continuation byte
    if (lead >= 0xC2 && lead <= 0xDF) {
      continuation = 1;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      continuation = 2;
      if (lead == 0xE0) low = 0xA0;
      if (lead == 0xED) high = 0x9F;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      continuation = 3;
      if (lead == 0xF0) low = 0x90;
      if (lead == 0xF4) high = 0x8F;
    } else {
      replace(i, i + 1);
      ++i;
      continue;
    }
    size_t k = 1;
    for (; k <= static_cast<size_t>(continuation); ++k) {
      if (i + k >= n) break;
      const unsigned char c = bytes[i + k];
      const unsigned char lo = k == 1 ? low : 0x80, hi = k == 1 ? high : 0xBF;
      if (c < lo || c > hi) break;
    }
    if (k == static_cast<size_t>(continuation) + 1) {
      i += k;
    } else {
      replace(i, i + k);  // the maximal subpart: lead plus the continuation bytes that were valid
      i += k;
    }
  }
  if (replaced > 0) {
    out.append(text, copied_until, n - copied_until);
    text = std::move(out);
  }
  return replaced;
}

TextDocument clean_text(std::string raw, uint64_t max_line_bytes) {
  TextDocument document;
  if (raw.find('\0') != std::string::npos) {
    document.skip_reason = "contains NUL bytes (a binary file?)";
    return document;
  }
  document.invalid_utf8_replaced = repair_utf8(raw);
  // Universal newlines: CRLF and lone CR become LF.
  if (raw.find('\r') != std::string::npos) {
    std::string converted;
    converted.reserve(raw.size());
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '\r') {
        converted.push_back('\n');
        ++document.newlines_converted;
        if (i + 1 < raw.size() && raw[i + 1] == '\n') ++i;
      } else {
        converted.push_back(raw[i]);
      }
    }
    raw = std::move(converted);
  }
  if (raw.find_first_not_of(" \t\n\v\f") == std::string::npos) {
    document.skip_reason = "empty (no text)";
    return document;
  }
  size_t line_start = 0;
  uint64_t line_number = 1;
  while (line_start <= raw.size()) {
    size_t line_end = raw.find('\n', line_start);
    if (line_end == std::string::npos) line_end = raw.size();
    const uint64_t length = line_end - line_start;
    if (length > max_line_bytes) {
      document.skip_reason = fmt::format(
          "line {} is {} bytes long, over the limit of {} (--max-line-bytes); not book text?",
          line_number, length, max_line_bytes);
      return document;
    }
    line_start = line_end + 1;
    ++line_number;
  }
  document.text = std::move(raw);
  return document;
}

TextDocument read_text_document(const fs::path& path, uint64_t max_line_bytes) {
  TextDocument document;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    document.skip_reason = fmt::format("cannot open: {}", std::strerror(errno));
    document.retry_later = true;
    return document;
  }
  struct stat info {};
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    ::close(fd);
    document.skip_reason = "not a regular file";
    document.retry_later = true;
    return document;
  }
  std::string raw(static_cast<size_t>(info.st_size), '\0');
  size_t done = 0;
  while (done < raw.size()) {
    const ssize_t n = ::read(fd, raw.data() + done, raw.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      document.skip_reason = n < 0 ? fmt::format("read failed: {}", std::strerror(errno))
                                   : "file shrank while being read";
      document.retry_later = true;
      ::close(fd);
      return document;
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  return clean_text(std::move(raw), max_line_bytes);
}

void read_jsonl(const fs::path& path,
                const std::function<void(uint64_t index, std::string text)>& on_document,
                const std::function<void(uint64_t line_number, const std::string& reason)>& on_bad_record) {
  LineReader reader(path);
  std::string line;
  uint64_t line_number = 0;
  uint64_t index = 0;
  while (reader.next_line(line)) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (record.is_discarded() || !record.is_object()) {
      on_bad_record(line_number, "not valid JSON (or not an object)");
      continue;
    }
    const auto text = record.find("text");
    if (text == record.end() || !text->is_string()) {
      on_bad_record(line_number, "no string \"text\" field");
      continue;
    }
    on_document(index++, text->get<std::string>());
  }
}

}  // namespace longtune::data
