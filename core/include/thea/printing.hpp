// theano.printing.debugprint and Graphviz export.
#pragma once

#include <string>
#include <vector>

#include "thea/graph.hpp"

namespace thea {

// Indented tree, one line per node: "softmax [id A] 'py_x'  fmatrix (?, 10)  train.cpp:7".
// Shared subtrees are printed once and referenced by id afterwards.
std::string debugprint(const Variable& var);
std::string debugprint(const std::vector<NodePtr>& roots);
// Graphviz DOT of the graph below `outputs`.
std::string to_dot(const std::vector<Variable>& outputs);
std::string to_dot(const std::vector<NodePtr>& roots);

}  // namespace thea
