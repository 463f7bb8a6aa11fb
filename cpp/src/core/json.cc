#include "edgeformer/json.h"

#include <cmath>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "edgeformer/errors.h"

namespace ef {

namespace {

constexpr int kMaxDepth = 64;

struct Parser {
  const char* p;
  const char* end;
  const char* begin;
  const std::string& what;

  [[noreturn]] void fail(const std::string& msg) {
    throw ValueError(what + ": invalid JSON at byte " + std::to_string(p - begin) + ": " + msg);
  }
  void ws() {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
  }
  bool lit(const char* s) {
    size_t n = std::strlen(s);
    if ((size_t)(end - p) >= n && std::memcmp(p, s, n) == 0) {
      p += n;
      return true;
    }
    return false;
  }
  static void put_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) out += (char)cp;
    else if (cp < 0x800) { out += (char)(0xc0 | cp >> 6); out += (char)(0x80 | (cp & 0x3f)); }
    else if (cp < 0x10000) {
      out += (char)(0xe0 | cp >> 12); out += (char)(0x80 | ((cp >> 6) & 0x3f)); out += (char)(0x80 | (cp & 0x3f));
    } else {
      out += (char)(0xf0 | cp >> 18); out += (char)(0x80 | ((cp >> 12) & 0x3f));
      out += (char)(0x80 | ((cp >> 6) & 0x3f)); out += (char)(0x80 | (cp & 0x3f));
    }
  }
  uint32_t hex4() {
    if (end - p < 4) fail("truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
      char c = *p++;
      v <<= 4;
      if (c >= '0' && c <= '9') v |= c - '0';
      else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
      else fail("bad \\u escape");
    }
    return v;
  }
  // Copies one multi-byte UTF-8 sequence starting with lead byte c (already consumed); rejects invalid ones.
  void utf8(char c, std::string& out) {
    const unsigned char b = (unsigned char)c;
    int n = b >= 0xf0 && b <= 0xf4 ? 3 : b >= 0xe0 ? 2 : b >= 0xc2 && b <= 0xdf ? 1 : -1;
    if (n < 0 || b > 0xf4) fail("invalid UTF-8 in string");
    if (end - p < n) fail("truncated UTF-8 in string");
    uint32_t cp = b & (0x3f >> n);
    for (int i = 0; i < n; i++) {
      unsigned char cc = (unsigned char)p[i];
      if ((cc & 0xc0) != 0x80) fail("invalid UTF-8 in string");
      cp = cp << 6 | (cc & 0x3f);
    }
    if ((n == 2 && (cp < 0x800 || (cp >= 0xd800 && cp < 0xe000))) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)))
      fail("invalid UTF-8 in string");
    out += c;
    out.append(p, n);
    p += n;
  }
  std::string string() {
    if (p >= end || *p != '"') fail("expected a string");
    p++;
    std::string out;
    while (true) {
      if (p >= end) fail("unterminated string");
      char c = *p++;
      if (c == '"') break;
      if ((unsigned char)c < 0x20) fail("control character in string");
      if ((unsigned char)c >= 0x80) { utf8(c, out); continue; }
      if (c != '\\') { out += c; continue; }
      if (p >= end) fail("unterminated escape");
      char e = *p++;
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xd800 && cp < 0xdc00) {
            if (!lit("\\u")) fail("lone surrogate");
            uint32_t lo = hex4();
            if (lo < 0xdc00 || lo >= 0xe000) fail("bad surrogate pair");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          }
          put_utf8(out, cp);
          break;
        }
        default: fail("bad escape");
      }
    }
    return out;
  }
  Json value(int depth) {
    if (depth > kMaxDepth) fail("nesting too deep");
    ws();
    if (p >= end) fail("unexpected end");
    Json j;
    char c = *p;
    if (c == '{') {
      p++;
      j.kind = Json::Object;
      ws();
      if (p < end && *p == '}') { p++; return j; }
      while (true) {
        ws();
        std::string key = string();
        ws();
        if (p >= end || *p != ':') fail("expected ':'");
        p++;
        j.obj.emplace_back(std::move(key), value(depth + 1));
        ws();
        if (p < end && *p == ',') { p++; continue; }
        if (p < end && *p == '}') { p++; break; }
        fail("expected ',' or '}'");
      }
    } else if (c == '[') {
      p++;
      j.kind = Json::Array;
      ws();
      if (p < end && *p == ']') { p++; return j; }
      while (true) {
        j.arr.push_back(value(depth + 1));
        ws();
        if (p < end && *p == ',') { p++; continue; }
        if (p < end && *p == ']') { p++; break; }
        fail("expected ',' or ']'");
      }
    } else if (c == '"') {
      j.kind = Json::String;
      j.str = string();
    } else if (lit("true")) {
      j.kind = Json::Bool; j.b = true;
    } else if (lit("false")) {
      j.kind = Json::Bool;
    } else if (lit("null")) {
      j.kind = Json::Null;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      const char* s = p;
      if (*p == '-') p++;
      bool integral = true;
      while (p < end && ((*p >= '0' && *p <= '9') || *p == '.' || *p == 'e' || *p == 'E' || *p == '+' || *p == '-')) {
        if (*p == '.' || *p == 'e' || *p == 'E') integral = false;
        p++;
      }
      std::string tok(s, p);
      if (tok == "-" || tok.empty()) fail("bad number");
      char* ep = nullptr;
      j.kind = Json::Number;
      j.num = std::strtod(tok.c_str(), &ep);
      if (!ep || *ep) fail("bad number '" + tok + "'");
      if (integral) {
        errno = 0;
        long long v = std::strtoll(tok.c_str(), &ep, 10);
        if (errno == ERANGE) fail("integer out of range '" + tok + "'");
        j.is_int = true;
        j.i = v;
      }
    } else {
      fail(std::string("unexpected character '") + c + "'");
    }
    return j;
  }
};

}  // namespace

const Json* Json::find(const std::string& key) const {
  for (auto& kv : obj)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

Json Json::parse(const char* data, size_t size, const std::string& what) {
  Parser ps{data, data + size, data, what};
  Json j = ps.value(0);
  ps.ws();
  // safetensors pads its header with spaces; anything else after the value is an error
  if (ps.p != ps.end) ps.fail("trailing data");
  return j;
}

}  // namespace ef
