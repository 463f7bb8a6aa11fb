// Grammar-constrained sampling: a context-free grammar in llama.cpp's GBNF notation restricts each step to the
// tokens whose bytes keep the generated text a prefix of a sentence of the grammar.
//
// GrammarRules parses and checks a grammar (no vocabulary): rules `name ::= alternatives`, string literals,
// character classes ([a-z], [^"\\]), `.`, groups, `|`, and the repetitions * + ? {m} {m,} {m,n}; # comments.
// GrammarVocab holds a tokenizer's token bytes, sorted so that tokens sharing a prefix are walked once.
// Grammar binds the two: it runs the pushdown automaton (the set of parse stacks, llama.cpp's design) over bytes,
// matching characters as UTF-8 code points, and caches each state's set of allowed tokens (a bitmask over the
// vocabulary): a JSON generation revisits a few dozen states, so most steps cost one lookup.
// GrammarState is one generation's position (the Sampler holds it).
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace ef {

class GrammarRules {
 public:
  GrammarRules(const std::string& text, const std::string& root = "root");  // ValueError names line and column

  struct Elem {
    enum Kind : uint8_t { End, Char, Rule } kind;
    int32_t arg;  // Char: a class index; Rule: a rule index
  };
  struct Class {
    bool negated = false;
    std::vector<std::pair<uint32_t, uint32_t>> ranges;  // inclusive code point ranges
    uint64_t ascii[2] = {0, 0};                            // the result for code points < 128
    bool match(uint32_t cp) const;
    bool match_any(uint32_t lo, uint32_t hi) const;  // some code point in [lo, hi] matches
  };
  std::vector<Elem> elems;                  // every alternative's elements, each alternative closed by End
  std::vector<std::vector<int32_t>> alts;   // per rule: the positions its alternatives start at
  std::vector<std::string> names;           // per rule (groups and repetitions: "<rule>_<n>")
  std::vector<Class> classes;
  int32_t root = 0;
};

class GrammarVocab {
 public:
  // token_bytes[i]: the bytes token i adds to the text (empty: never allowed, as special tokens); eos: the
  // tokens that end the text (allowed once the grammar is complete); strip_first_space: the tokenizer's
  // decoder drops the text's first space (SentencePiece), so the grammar does not see it
  GrammarVocab(std::vector<std::string> token_bytes, std::vector<int32_t> eos, bool strip_first_space);
  int64_t size() const { return (int64_t)bytes_.size(); }

 private:
  friend class Grammar;
  std::vector<std::string> bytes_;
  std::vector<int32_t> order_;  // non-empty tokens sorted by their bytes
  std::vector<int32_t> lcp_;    // common prefix of order_[i] and order_[i - 1]
  std::vector<int32_t> eos_;
  bool strip_first_space_;
};

struct GrammarPos {
  std::vector<int32_t> stacks;  // sorted interned stack ids; 0: the empty stack (the text is a whole sentence)
  uint32_t partial = 0;         // an unfinished UTF-8 character: its bits so far
  uint8_t need = 0;             // and how many continuation bytes it still needs
  uint8_t len = 0;              // of how many bytes in all (the shortest form only: no overlong encodings)
  bool at_start = true;         // no byte yet (strip_first_space applies)
  bool operator==(const GrammarPos& o) const {
    return stacks == o.stacks && partial == o.partial && need == o.need && len == o.len && at_start == o.at_start;
  }
};

class Grammar {
 public:
  Grammar(std::shared_ptr<const GrammarRules> rules, std::shared_ptr<const GrammarVocab> vocab);
  int64_t vocab_size() const { return vocab_->size(); }
  GrammarPos start();
  // sets the logits (vocab of them; beyond vocab_size: never allowed) of the tokens not allowed after pos to
  // -inf; returns how many are allowed
  int64_t apply(const GrammarPos& pos, float* logits, int64_t vocab);
  bool advance(GrammarPos& pos, int32_t token);  // false (pos unchanged) when the token is not allowed
  bool is_end(int32_t token) const;
  static bool complete(const GrammarPos& pos) { return pos.need == 0 && !pos.stacks.empty() && pos.stacks[0] == 0; }
  static bool finished(const GrammarPos& pos) { return complete(pos) && pos.stacks.size() == 1; }
  size_t cached_states();

 private:
  struct Node {
    int32_t pos, parent;
  };
  struct PosHash {
    size_t operator()(const GrammarPos& p) const;
  };
  std::shared_ptr<const GrammarRules> g_;
  std::shared_ptr<const GrammarVocab> vocab_;
  std::mutex mu_;
  std::vector<Node> nodes_;  // interned stacks: (the position of their top element, the stack below)
  std::unordered_map<uint64_t, int32_t> ids_;
  std::vector<std::vector<int32_t>> after_;  // per stack: the stacks after its top character matched
  std::vector<uint8_t> after_done_;
  std::unordered_set<uint64_t> seen_;  // (pos, parent) pairs one expansion has visited: each derivation once
  std::unordered_map<GrammarPos, std::vector<uint64_t>, PosHash> masks_;
  // A lazily built DFA over the automaton's states: each state reached gets an id and a row of 256 next ids
  // (-2 not known yet, -1 dead), so that walking the vocabulary costs an array load per byte wherever states
  // recur (inside a string: after any character) instead of a step of the parse stacks.
  struct DState {
    GrammarPos pos;
    std::vector<int32_t> next;
  };
  std::vector<DState> dstates_;
  std::unordered_map<GrammarPos, int32_t, PosHash> dstate_ids_;
  int32_t dstate(const GrammarPos& pos);
  int32_t dnext(int32_t s, uint8_t byte);
  void bound_caches();  // drops every cache past its bound (at the start of a call: ids stay valid within one)

  int32_t intern(int32_t pos, int32_t parent);
  void expand(int32_t pos, int32_t parent, std::vector<int32_t>& out, int depth);
  const std::vector<int32_t>& after(int32_t stack);
  // one byte: next from cur; false when no stack survives
  bool step(const GrammarPos& cur, uint8_t byte, GrammarPos& next);
  const std::vector<uint64_t>& mask(const GrammarPos& pos);  // cached; mu_ held
  std::vector<uint64_t> compute_mask(const GrammarPos& pos);
};

// One generation's walk through a grammar.
class GrammarState {
 public:
  explicit GrammarState(std::shared_ptr<Grammar> g) : g_(std::move(g)), pos_(g_->start()) {}
  // sets the logits of tokens the grammar does not allow to -inf; false when it allows none
  bool mask(float* logits, int64_t vocab) { return g_->apply(pos_, logits, vocab) > 0; }
  void accept(int32_t token);  // a sampled token (end tokens leave the state as it is)
  bool try_accept(int32_t token) { return g_->advance(pos_, token); }  // false (no change) if not allowed
  bool finished() const { return Grammar::finished(pos_); }

 private:
  std::shared_ptr<Grammar> g_;
  GrammarPos pos_;
};

}  // namespace ef
