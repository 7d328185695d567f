// FunctionGraph: a private copy of the user's graph that rewrites may edit. Leaves
// (inputs, shared variables, constants) are shared with the user's graph; every Apply
// node is cloned, so replace() never touches what the user built.
#pragma once

#include <string>
#include <unordered_map>
#include <vector>

#include "thea/graph.hpp"

namespace thea {

struct UpdatePair {
  NodePtr target;  // a Shared node
  NodePtr value;   // its new value, computed from values before the call
};

class FunctionGraph {
 public:
  // `givens` are substituted (old leaf -> replacement) while cloning.
  FunctionGraph(std::vector<NodePtr> inputs, std::vector<NodePtr> outputs,
                std::vector<UpdatePair> updates,
                const std::vector<std::pair<NodePtr, NodePtr>>& givens = {});

  const std::vector<NodePtr>& inputs() const { return inputs_; }
  const std::vector<NodePtr>& outputs() const { return outputs_; }
  const std::vector<UpdatePair>& updates() const { return updates_; }
  // Outputs then update values: everything the program must produce.
  std::vector<NodePtr> roots() const;

  // Every node reachable from roots(), inputs before users.
  std::vector<NodePtr> toposort() const;
  // node -> nodes that use it (recomputed on demand; cheap at these sizes).
  std::unordered_map<const Node*, std::vector<NodePtr>> clients() const;

  // Redirects every use of `old_node` (in nodes, outputs and updates) to `new_node`.
  // Types must agree (dtype and rank); `reason` names the rewrite for tracing.
  void replace(const NodePtr& old_node, const NodePtr& new_node, const std::string& reason);
  std::size_t replacements() const { return replacements_; }

 private:
  std::vector<NodePtr> inputs_;
  std::vector<NodePtr> outputs_;
  std::vector<UpdatePair> updates_;
  std::size_t replacements_ = 0;
};

}  // namespace thea
