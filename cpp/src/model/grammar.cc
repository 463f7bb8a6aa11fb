#include "edgeformer/grammar.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>

#include "edgeformer/errors.h"

namespace ef {

namespace {

constexpr size_t kMaxElems = 1 << 20;      // after repetitions are unrolled
constexpr size_t kMaxStacks = 20000;       // parse stacks alive at once: an ambiguous grammar's blow-up
constexpr size_t kMaxCachedMasks = 256;    // states whose allowed tokens are kept
constexpr size_t kMaxDfaStates = 4096;     // states with a transition row (1 KiB each)
constexpr int kMaxExpandDepth = 4000;      // rule references followed within one expansion
constexpr uint32_t kMaxCodePoint = 0x10FFFF;

// ---- the parser -----------------------------------------------------------------------------------------

struct RawElem {
  GrammarRules::Elem::Kind kind;
  int32_t arg;  // Char: class index; Rule: rule index (names resolved at the end)
};
using RawAlt = std::vector<RawElem>;

class Parser {
 public:
  Parser(const std::string& s, GrammarRules& out) : s_(s), g_(out) {}

  void parse(const std::string& root) {
    skip();
    if (i_ >= s_.size()) fail("the grammar is empty");
    while (i_ < s_.size()) {
      const size_t at = i_;
      const std::string name = ident();
      if (name.empty()) fail("expected a rule name");
      skip();
      if (s_.compare(i_, 3, "::=") != 0) fail("expected '::=' after the rule name '" + name + "'");
      i_ += 3;
      const int32_t r = rule_id(name);
      if (defined_[r]) fail_at(at, "rule '" + name + "' is defined twice");
      defined_[r] = 1;
      rules_[r] = alternatives(name);
      skip();
    }
    for (size_t r = 0; r < rules_.size(); r++)
      if (!defined_[r]) fail_at(used_at_[r], "rule '" + g_.names[r] + "' is used but never defined");
    auto it = by_name_.find(root);
    if (it == by_name_.end()) throw ValueError("grammar: no rule named '" + root + "' (the root rule)");
    g_.root = it->second;
  }

  std::vector<std::vector<RawAlt>> rules_;

 private:
  const std::string& s_;
  GrammarRules& g_;
  size_t i_ = 0;
  std::map<std::string, int32_t> by_name_;
  std::vector<uint8_t> defined_;
  std::vector<size_t> used_at_;
  std::map<std::string, int32_t> fresh_;  // per rule name: anonymous rules made inside it

  [[noreturn]] void fail_at(size_t at, const std::string& msg) const {
    size_t line = 1, col = 1;
    for (size_t k = 0; k < at && k < s_.size(); k++) {
      if (s_[k] == '\n') line++, col = 1;
      else col++;
    }
    throw ValueError("grammar: line " + std::to_string(line) + ", column " + std::to_string(col) + ": " + msg);
  }
  [[noreturn]] void fail(const std::string& msg) const { fail_at(i_, msg); }

  void skip() {  // spaces, newlines, # comments
    while (i_ < s_.size()) {
      const char c = s_[i_];
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r') i_++;
      else if (c == '#') {
        while (i_ < s_.size() && s_[i_] != '\n') i_++;
      } else break;
    }
  }
  static bool name_char(char c) { return std::isalnum((unsigned char)c) || c == '-' || c == '_'; }
  std::string ident() {
    const size_t b = i_;
    while (i_ < s_.size() && name_char(s_[i_])) i_++;
    return s_.substr(b, i_ - b);
  }
  bool at_rule_start() {  // `name ::=` ahead: the current rule's body has ended
    size_t j = i_;
    while (j < s_.size() && name_char(s_[j])) j++;
    if (j == i_) return false;
    while (j < s_.size() && (s_[j] == ' ' || s_[j] == '\t' || s_[j] == '\n' || s_[j] == '\r')) j++;
    return s_.compare(j, 3, "::=") == 0;
  }

  int32_t rule_id(const std::string& name) {
    auto it = by_name_.find(name);
    if (it != by_name_.end()) return it->second;
    const int32_t r = new_rule(name, false);
    by_name_.emplace(name, r);
    return r;
  }
  int32_t new_rule(const std::string& name, bool defined) {  // (anonymous rules have no entry in by_name_)
    const int32_t r = (int32_t)rules_.size();
    rules_.emplace_back();
    g_.names.push_back(name);
    defined_.push_back(defined);
    used_at_.push_back(i_);
    return r;
  }
  int32_t anonymous(const std::string& in, std::vector<RawAlt> alts) {
    const int32_t r = new_rule(in + "_" + std::to_string(++fresh_[in]), true);
    rules_[r] = std::move(alts);
    return r;
  }

  // one UTF-8 encoded code point of the grammar text
  uint32_t utf8() {
    const unsigned char c = (unsigned char)s_[i_];
    int n = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
    if (n < 0) fail("not valid UTF-8");
    uint32_t cp = n == 0 ? c : c & (0x3F >> n);
    i_++;
    for (int k = 0; k < n; k++, i_++) {
      if (i_ >= s_.size() || ((unsigned char)s_[i_] >> 6) != 2) fail("not valid UTF-8");
      cp = (cp << 6) | ((unsigned char)s_[i_] & 0x3F);
    }
    return cp;
  }
  uint32_t hex(int n) {
    uint32_t v = 0;
    for (int k = 0; k < n; k++, i_++) {
      if (i_ >= s_.size() || !std::isxdigit((unsigned char)s_[i_])) fail("expected " + std::to_string(n) + " hex digits");
      const char c = s_[i_];
      v = v * 16 + (uint32_t)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    if (v > kMaxCodePoint) fail("code point beyond U+10FFFF");
    return v;
  }
  // a character of a literal or class, escapes decoded
  uint32_t character() {
    if (i_ >= s_.size()) fail("unexpected end of the grammar");
    if (s_[i_] != '\\') return utf8();
    i_++;
    if (i_ >= s_.size()) fail("unexpected end of the grammar after '\\'");
    const char c = s_[i_++];
    switch (c) {
      case 'n': return '\n';
      case 'r': return '\r';
      case 't': return '\t';
      case '0': return 0;
      case 'x': return hex(2);
      case 'u': return hex(4);
      case 'U': return hex(8);
      case '\\': case '"': case '\'': case '[': case ']': case '-': case '^': case '/': return (uint32_t)c;
      default: i_--; fail(std::string("unknown escape '\\") + c + "'");
    }
  }

  int32_t add_class(GrammarRules::Class c) {
    for (uint32_t cp = 0; cp < 128; cp++) {
      bool in = false;
      for (const auto& r : c.ranges) in |= cp >= r.first && cp <= r.second;
      if (in != c.negated) c.ascii[cp >> 6] |= 1ull << (cp & 63);
    }
    g_.classes.push_back(std::move(c));
    return (int32_t)g_.classes.size() - 1;
  }
  RawElem char_elem(uint32_t cp) {
    GrammarRules::Class c;
    c.ranges.emplace_back(cp, cp);
    return {GrammarRules::Elem::Char, add_class(std::move(c))};
  }

  int depth_ = 0;
  std::vector<RawAlt> alternatives(const std::string& in) {
    if (++depth_ > 256) fail("groups nest too deeply (over 256 levels)");
    std::vector<RawAlt> alts;
    alts.push_back(sequence(in));
    skip();
    while (i_ < s_.size() && s_[i_] == '|') {
      i_++;
      alts.push_back(sequence(in));
      skip();
    }
    depth_--;
    return alts;
  }

  RawAlt sequence(const std::string& in) {
    RawAlt seq;
    for (;;) {
      skip();
      if (i_ >= s_.size() || s_[i_] == '|' || s_[i_] == ')' || at_rule_start()) break;
      const size_t at = i_;
      const char c = s_[i_];
      RawAlt item;  // what the next postfix operator applies to (a literal: all of its characters)
      if (c == '"') {
        i_++;
        while (true) {
          if (i_ >= s_.size()) fail_at(at, "unterminated string literal");
          if (s_[i_] == '"') break;
          item.push_back(char_elem(character()));
        }
        i_++;
      } else if (c == '[') {
        i_++;
        GrammarRules::Class cl;
        if (i_ < s_.size() && s_[i_] == '^') cl.negated = true, i_++;
        while (true) {
          if (i_ >= s_.size()) fail_at(at, "unterminated character class");
          if (s_[i_] == ']') break;
          const uint32_t lo = character();
          uint32_t hi = lo;
          if (i_ + 1 < s_.size() && s_[i_] == '-' && s_[i_ + 1] != ']') {
            i_++;
            hi = character();
            if (hi < lo) fail("a character range whose end is before its start");
          }
          cl.ranges.emplace_back(lo, hi);
        }
        i_++;
        item.push_back({GrammarRules::Elem::Char, add_class(std::move(cl))});
      } else if (c == '.') {
        i_++;
        GrammarRules::Class cl;
        cl.negated = true;  // any character
        item.push_back({GrammarRules::Elem::Char, add_class(std::move(cl))});
      } else if (c == '(') {
        i_++;
        std::vector<RawAlt> alts = alternatives(in);
        skip();
        if (i_ >= s_.size() || s_[i_] != ')') fail_at(at, "unclosed '('");
        i_++;
        if (alts.size() == 1) item = std::move(alts[0]);
        else item.push_back({GrammarRules::Elem::Rule, anonymous(in, std::move(alts))});
      } else if (name_char(c)) {
        const std::string name = ident();
        const bool known = by_name_.count(name) > 0;
        const int32_t r = rule_id(name);
        if (!known) used_at_[r] = at;
        item.push_back({GrammarRules::Elem::Rule, r});
      } else {
        fail(std::string("unexpected character '") + c + "'");
      }
      postfix(in, item);
      seq.insert(seq.end(), item.begin(), item.end());
    }
    return seq;
  }

  // the repetition operators after an item (applied in turn: "a"*? is ("a"*)?)
  void postfix(const std::string& in, RawAlt& item) {
    for (;;) {
      if (i_ >= s_.size()) return;
      const char c = s_[i_];
      if (c != '*' && c != '+' && c != '?' && c != '{') return;
      const size_t at = i_++;
      uint64_t lo = 0, hi = UINT64_MAX;  // UINT64_MAX: no upper bound
      if (c == '+') lo = 1;
      else if (c == '?') hi = 1;
      else if (c == '{') {
        skip();
        lo = number();
        skip();
        hi = lo;
        if (i_ < s_.size() && s_[i_] == ',') {
          i_++;
          skip();
          hi = i_ < s_.size() && std::isdigit((unsigned char)s_[i_]) ? number() : UINT64_MAX;
          skip();
        }
        if (i_ >= s_.size() || s_[i_] != '}') fail_at(at, "expected '}' closing the repetition");
        i_++;
        if (hi < lo) fail_at(at, "a repetition {m,n} with n < m");
        if (lo > 10000 || (hi != UINT64_MAX && hi > 10000)) fail_at(at, "a repetition count above 10000");
      }
      item = repeat(in, std::move(item), lo, hi);
    }
  }
  uint64_t number() {
    if (i_ >= s_.size() || !std::isdigit((unsigned char)s_[i_])) fail("expected a number");
    uint64_t v = 0;
    while (i_ < s_.size() && std::isdigit((unsigned char)s_[i_])) {
      v = v * 10 + (uint64_t)(s_[i_++] - '0');
      if (v > 1000000) fail("number too large");
    }
    return v;
  }
  size_t elems_ = 0;
  RawAlt repeat(const std::string& in, RawAlt x, uint64_t lo, uint64_t hi) {
    elems_ += x.size() * (size_t)std::max<uint64_t>(lo, hi == UINT64_MAX ? lo + 1 : hi);
    if (elems_ > kMaxElems) fail("the grammar is too large once its repetitions are unrolled");
    RawAlt out;
    for (uint64_t k = 0; k < lo; k++) out.insert(out.end(), x.begin(), x.end());
    if (hi == UINT64_MAX) {  // x*: r ::= x r | (empty)
      const int32_t r = anonymous(in, {});
      RawAlt again = x;
      again.push_back({GrammarRules::Elem::Rule, r});
      rules_[r] = {again, RawAlt{}};
      out.push_back({GrammarRules::Elem::Rule, r});
    } else if (hi > lo) {  // up to hi - lo more: o_1 ::= x | (empty), o_k ::= x o_(k-1) | (empty)
      int32_t prev = -1;
      for (uint64_t k = 0; k < hi - lo; k++) {
        RawAlt a = x;
        if (prev >= 0) a.push_back({GrammarRules::Elem::Rule, prev});
        prev = anonymous(in, {a, RawAlt{}});
      }
      out.push_back({GrammarRules::Elem::Rule, prev});
    }
    return out;
  }
};

}  // namespace

bool GrammarRules::Class::match(uint32_t cp) const {
  if (cp < 128) return (ascii[cp >> 6] >> (cp & 63)) & 1;
  bool in = false;
  for (const auto& r : ranges) in |= cp >= r.first && cp <= r.second;
  return in != negated;
}

bool GrammarRules::Class::match_any(uint32_t lo, uint32_t hi) const {
  if (!negated) {
    for (const auto& r : ranges)
      if (r.first <= hi && r.second >= lo) return true;
    return false;
  }
  // some code point of [lo, hi] outside every range: walk up from lo past the ranges that cover it
  uint32_t cp = lo;
  for (bool moved = true; moved && cp <= hi;) {
    moved = false;
    for (const auto& r : ranges)
      if (cp >= r.first && cp <= r.second) {
        if (r.second >= hi) return false;
        cp = r.second + 1, moved = true;
      }
  }
  return cp <= hi;
}

GrammarRules::GrammarRules(const std::string& text, const std::string& root_name) {
  Parser p(text, *this);
  p.parse(root_name);
  const auto& rules = p.rules_;
  const size_t R = rules.size();
  // a rule that can match nothing, and one that reaches itself before consuming a character (left
  // recursion, or a repetition of something that can match nothing) would loop forever: refused
  std::vector<uint8_t> nullable(R, 0);
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t r = 0; r < R; r++) {
      if (nullable[r]) continue;
      for (const RawAlt& a : rules[r]) {
        bool all = true;
        for (const RawElem& e : a) all &= e.kind == Elem::Rule && nullable[e.arg];
        if (all) {
          nullable[r] = 1, changed = true;
          break;
        }
      }
    }
  }
  std::vector<std::vector<int32_t>> first(R);  // rules reached before any character
  for (size_t r = 0; r < R; r++)
    for (const RawAlt& a : rules[r])
      for (const RawElem& e : a) {
        if (e.kind != Elem::Rule) break;
        first[r].push_back(e.arg);
        if (!nullable[e.arg]) break;
      }
  std::vector<uint8_t> color(R, 0);  // 0 new, 1 on the path, 2 done (a depth-first walk without recursion)
  std::vector<std::pair<int32_t, size_t>> path;  // (rule, next edge)
  for (size_t r0 = 0; r0 < R; r0++) {
    if (color[r0]) continue;
    color[r0] = 1;
    path.emplace_back((int32_t)r0, 0);
    while (!path.empty()) {
      auto& [r, k] = path.back();
      if (k == first[r].size()) {
        color[r] = 2;
        path.pop_back();
        continue;
      }
      const int32_t s = first[r][k++];
      if (color[s] == 1)
        throw ValueError("grammar: rule '" + names[s] + "' is left-recursive (it can reach itself before matching a "
                         "character; a repetition of something that can match nothing does too)");
      if (color[s] == 0) {
        color[s] = 1;
        path.emplace_back(s, 0);
      }
    }
  }

  alts.resize(R);
  for (size_t r = 0; r < R; r++)
    for (const RawAlt& a : rules[r]) {
      alts[r].push_back((int32_t)elems.size());
      for (const RawElem& e : a) elems.push_back({e.kind, e.arg});
      elems.push_back({Elem::End, 0});
    }
}

// ---- the vocabulary ---------------------------------------------------------------------------------------

GrammarVocab::GrammarVocab(std::vector<std::string> token_bytes, std::vector<int32_t> eos, bool strip_first_space)
    : bytes_(std::move(token_bytes)), eos_(std::move(eos)), strip_first_space_(strip_first_space) {
  EF_CHECK(!bytes_.empty(), "grammar: empty vocabulary");
  for (int32_t e : eos_) EF_CHECK(e >= 0 && e < (int64_t)bytes_.size(), "grammar: end token id " + std::to_string(e) + " out of range");
  for (size_t i = 0; i < bytes_.size(); i++)
    if (!bytes_[i].empty() && std::find(eos_.begin(), eos_.end(), (int32_t)i) == eos_.end()) order_.push_back((int32_t)i);
  std::sort(order_.begin(), order_.end(), [&](int32_t a, int32_t b) { return bytes_[a] < bytes_[b] || (bytes_[a] == bytes_[b] && a < b); });
  lcp_.resize(order_.size(), 0);
  for (size_t k = 1; k < order_.size(); k++) {
    const std::string &a = bytes_[order_[k - 1]], &b = bytes_[order_[k]];
    size_t n = 0;
    while (n < a.size() && n < b.size() && a[n] == b[n]) n++;
    lcp_[k] = (int32_t)n;
  }
}

namespace {
// a set of stack ids: sorted, each once (states compare and hash by it)
void sort_unique(std::vector<int32_t>& v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
}
}  // namespace

// ---- the automaton -----------------------------------------------------------------------------------------

size_t Grammar::PosHash::operator()(const GrammarPos& p) const {
  uint64_t h = 1469598103934665603ull ^ (p.partial * 31u + p.need * 7u + p.len * 3u + (p.at_start ? 1u : 0u));
  for (int32_t s : p.stacks) h = (h ^ (uint64_t)(uint32_t)s) * 1099511628211ull;
  return (size_t)h;
}

Grammar::Grammar(std::shared_ptr<const GrammarRules> rules, std::shared_ptr<const GrammarVocab> vocab)
    : g_(std::move(rules)), vocab_(std::move(vocab)) {
  EF_CHECK(g_ && vocab_, "grammar: rules and vocabulary needed");
  nodes_.push_back({-1, -1});  // 0: the empty stack
  after_.emplace_back();
  after_done_.push_back(1);
}

int32_t Grammar::intern(int32_t pos, int32_t parent) {
  const uint64_t key = ((uint64_t)(uint32_t)pos << 32) | (uint32_t)parent;
  auto it = ids_.find(key);
  if (it != ids_.end()) return it->second;
  const int32_t id = (int32_t)nodes_.size();
  if (nodes_.size() >= (size_t)std::numeric_limits<int32_t>::max() - 1) throw Error("grammar: too many parse stacks");
  nodes_.push_back({pos, parent});
  after_.emplace_back();
  after_done_.push_back(0);
  ids_.emplace(key, id);
  return id;
}

// the stacks whose tops are characters, reached from the element at pos above the stack `parent`
void Grammar::expand(int32_t pos, int32_t parent, std::vector<int32_t>& out, int depth) {
  if (depth > kMaxExpandDepth) throw ValueError("grammar: rules nest too deeply");
  // a pair already expanded adds nothing new: without this, items that can match nothing in several ways
  // (("a"?)? repeated) multiply the paths exponentially
  if (!seen_.insert(((uint64_t)(uint32_t)pos << 32) | (uint32_t)parent).second) return;
  const GrammarRules::Elem& e = g_->elems[pos];
  switch (e.kind) {
    case GrammarRules::Elem::Char:
      out.push_back(intern(pos, parent));
      return;
    case GrammarRules::Elem::End:
      if (parent == 0) out.push_back(0);
      else expand(nodes_[parent].pos, nodes_[parent].parent, out, depth + 1);
      return;
    case GrammarRules::Elem::Rule: {
      // the return frame; none when the reference ends its alternative (a repetition's stack stays flat)
      const int32_t cont = g_->elems[pos + 1].kind == GrammarRules::Elem::End ? parent : intern(pos + 1, parent);
      for (int32_t a : g_->alts[e.arg]) expand(a, cont, out, depth + 1);
      return;
    }
  }
}

const std::vector<int32_t>& Grammar::after(int32_t stack) {
  if (!after_done_[stack]) {
    std::vector<int32_t> out;
    seen_.clear();
    expand(nodes_[stack].pos + 1, nodes_[stack].parent, out, 0);
    sort_unique(out);
    after_[stack] = std::move(out);
    after_done_[stack] = 1;
  }
  return after_[stack];
}

GrammarPos Grammar::start() {
  std::lock_guard<std::mutex> lk(mu_);
  GrammarPos p;
  seen_.clear();
  for (int32_t a : g_->alts[g_->root]) expand(a, 0, p.stacks, 0);
  sort_unique(p.stacks);
  p.at_start = vocab_->strip_first_space_;
  return p;
}

bool Grammar::step(const GrammarPos& cur, uint8_t b, GrammarPos& next) {
  next.at_start = false;
  if (cur.at_start && b == ' ') {  // the space the decoder drops
    next.stacks = cur.stacks;
    next.partial = 0, next.need = 0, next.len = 0;
    return true;
  }
  uint32_t cp;
  if (cur.need == 0) {
    if (b < 0x80) cp = b;
    else {
      const int n = (b >> 5) == 6 ? 1 : (b >> 4) == 14 ? 2 : (b >> 3) == 30 ? 3 : 0;
      if (n == 0 || b == 0xC0 || b == 0xC1 || b > 0xF4) return false;
      next.partial = b & (0x3F >> n);
      next.need = (uint8_t)n;
      next.len = (uint8_t)(n + 1);
    }
  } else {
    if ((b >> 6) != 2) return false;
    next.partial = (cur.partial << 6) | (b & 0x3F);
    next.need = (uint8_t)(cur.need - 1);
    next.len = cur.len;
  }
  if (cur.need != 0 || b >= 0x80) {
    static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};  // the shortest form's first code point
    const uint32_t lo = std::max(next.partial << (6 * next.need), kMin[next.len]);
    const uint32_t hi = std::min((next.partial << (6 * next.need)) | ((1u << (6 * next.need)) - 1), kMaxCodePoint);
    if (lo > hi) return false;  // an overlong encoding, or beyond U+10FFFF
    if (next.need > 0) {  // still unfinished: some stack must accept a character with these leading bits
      // (surrogates, D800-DFFF, are no characters: the range is split around them)
      const uint32_t lo2 = std::max(lo, 0xE000u), hi1 = std::min(hi, 0xD7FFu);
      next.stacks = cur.stacks;
      for (int32_t s : cur.stacks) {
        if (s == 0) continue;
        const GrammarRules::Class& c = g_->classes[g_->elems[nodes_[s].pos].arg];
        if ((lo <= hi1 && c.match_any(lo, hi1)) || (lo2 <= hi && c.match_any(lo2, hi))) return true;
      }
      return false;
    }
    cp = next.partial;
    if (cp >= 0xD800 && cp <= 0xDFFF) return false;
  }
  next.partial = 0, next.need = 0, next.len = 0;
  std::vector<int32_t>& out = next.stacks;
  out.clear();
  for (int32_t s : cur.stacks) {
    if (s == 0 || !g_->classes[g_->elems[nodes_[s].pos].arg].match(cp)) continue;
    const std::vector<int32_t>& a = after(s);
    out.insert(out.end(), a.begin(), a.end());
  }
  if (out.empty()) return false;
  sort_unique(out);
  if (out.size() > kMaxStacks) throw ValueError("grammar: too ambiguous (over " + std::to_string(kMaxStacks) + " parses at once)");
  return true;
}

int32_t Grammar::dstate(const GrammarPos& pos) {
  auto it = dstate_ids_.find(pos);
  if (it != dstate_ids_.end()) return it->second;
  const int32_t id = (int32_t)dstates_.size();
  dstates_.push_back({pos, std::vector<int32_t>(256, -2)});
  dstate_ids_.emplace(pos, id);
  return id;
}

int32_t Grammar::dnext(int32_t s, uint8_t byte) {
  int32_t n = dstates_[s].next[byte];
  if (n != -2) return n;
  GrammarPos nx;
  n = step(dstates_[s].pos, byte, nx) ? dstate(nx) : -1;
  dstates_[s].next[byte] = n;  // (dstate() may have moved dstates_: indexed again)
  return n;
}

void Grammar::bound_caches() {
  if (masks_.size() >= kMaxCachedMasks) masks_.clear();
  if (dstates_.size() >= kMaxDfaStates) {
    dstates_.clear();
    dstate_ids_.clear();
  }
}

std::vector<uint64_t> Grammar::compute_mask(const GrammarPos& pos) {
  const GrammarVocab& v = *vocab_;
  std::vector<uint64_t> m((size_t)(v.size() + 63) / 64, 0);
  std::vector<int32_t> at(1, dstate(pos));  // at[d]: the state after the first d bytes of the current token
  size_t dead = SIZE_MAX;                   // the tokens from here on die at this depth while they share that prefix
  for (size_t k = 0; k < v.order_.size(); k++) {
    const size_t l = (size_t)v.lcp_[k];
    if (l >= dead) continue;
    dead = SIZE_MAX;
    const int32_t tok = v.order_[k];
    const std::string& b = v.bytes_[tok];
    if (at.size() < b.size() + 1) at.resize(b.size() + 1);
    size_t d = l;
    for (; d < b.size(); d++)
      if ((at[d + 1] = dnext(at[d], (uint8_t)b[d])) < 0) break;
    if (d < b.size()) {
      dead = d + 1;
      continue;
    }
    m[(size_t)tok >> 6] |= 1ull << (tok & 63);
  }
  if (complete(pos))
    for (int32_t e : v.eos_) m[(size_t)e >> 6] |= 1ull << (e & 63);
  return m;
}

const std::vector<uint64_t>& Grammar::mask(const GrammarPos& pos) {
  auto it = masks_.find(pos);
  if (it != masks_.end()) return it->second;
  bound_caches();
  return masks_.emplace(pos, compute_mask(pos)).first->second;
}

int64_t Grammar::apply(const GrammarPos& pos, float* logits, int64_t vocab) {
  std::lock_guard<std::mutex> lk(mu_);
  const std::vector<uint64_t>& m = mask(pos);
  const int64_t V = vocab_->size();
  int64_t n = 0;
  for (int64_t i = 0; i < vocab; i++) {
    const bool ok = i < V && ((m[(size_t)i >> 6] >> (i & 63)) & 1);
    if (!ok) logits[i] = -std::numeric_limits<float>::infinity();
    n += ok;
  }
  return n;
}

bool Grammar::is_end(int32_t token) const {
  return std::find(vocab_->eos_.begin(), vocab_->eos_.end(), token) != vocab_->eos_.end();
}

bool Grammar::advance(GrammarPos& pos, int32_t token) {
  if (is_end(token)) return complete(pos);
  std::lock_guard<std::mutex> lk(mu_);
  if (token < 0 || token >= vocab_->size() || vocab_->bytes_[token].empty()) return false;
  bound_caches();
  int32_t s = dstate(pos);
  for (unsigned char b : vocab_->bytes_[token])
    if ((s = dnext(s, b)) < 0) return false;
  pos = dstates_[s].pos;
  return true;
}

size_t Grammar::cached_states() {
  std::lock_guard<std::mutex> lk(mu_);
  return masks_.size();
}

void GrammarState::accept(int32_t token) {
  if (!g_->advance(pos_, token))
    throw Error("grammar: token " + std::to_string(token) + " was sampled where the grammar does not allow it");
}

}  // namespace ef
