// The rewrite engine: small named passes in one ordered registry, each capped in
// iterations and timed. THEA_DEBUG=rewrites traces every replacement, THEA_DEBUG=passes
// prints per-pass timing, THEA_DEBUG=verify checks the graph after each pass,
// THEA_EXCLUDE=name,name disables passes (as does FunctionOptions::exclude).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "thea/fgraph.hpp"

namespace thea {

// A local rewrite looks at one node and returns a replacement (or nullptr).
using LocalRewriteFn = std::function<NodePtr(FunctionGraph&, const NodePtr&)>;
// A global rewrite edits the whole graph; returns true when it changed something.
using GlobalRewriteFn = std::function<bool(FunctionGraph&)>;

struct RewritePass {
  std::string name;
  std::vector<std::string> tags;  // "canonicalize", "stabilize", "specialize", "fusion", ...
  double order = 0;               // passes run in increasing order
  LocalRewriteFn local;           // exactly one of local / global is set
  GlobalRewriteFn global;
  int max_iterations = 50;  // a local pass sweeps the graph until no change or this cap
};

class RewriteRegistry {
 public:
  static RewriteRegistry& instance();
  void add(RewritePass pass);                      // replaces a pass of the same name
  std::vector<const RewritePass*> passes() const;  // in order
  std::vector<std::string> names() const;

 private:
  std::vector<RewritePass> passes_;
};

struct PassStat {
  std::string name;
  int iterations = 0;
  std::size_t replacements = 0;
  double seconds = 0;
};

// Runs every registered pass not in `exclude` (nor in THEA_EXCLUDE).
std::vector<PassStat> run_rewrites(FunctionGraph& fg, const std::vector<std::string>& exclude = {});

// The built-in passes, registered explicitly on first use of the registry (static
// registrars would be dropped by the linker from a static library).
void register_core_rewrites(RewriteRegistry& registry);  // merge, constant folding
void register_op_rewrites(RewriteRegistry& registry);    // ops/rewrites/

// True when THEA_DEBUG (comma separated) contains `flag`.
bool debug_enabled(const std::string& flag);

}  // namespace thea
