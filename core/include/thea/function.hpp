// function(inputs, outputs, updates, givens): compile a graph into a callable.
// Theano semantics: outputs and update values are computed from the values before the
// call, then the shared variables are updated.
#pragma once

#include <memory>
#include <source_location>
#include <string>
#include <utility>
#include <vector>

#include "thea/graph.hpp"
#include "thea/rewrite.hpp"

namespace thea {

class Program;
class FunctionGraph;

using Updates = std::vector<std::pair<Variable, Variable>>;
using Givens = std::vector<std::pair<Variable, Variable>>;

struct FunctionOptions {
  std::string backend;                // empty: THEA_BACKEND or the default backend
  bool allow_input_downcast = false;  // float64 data into float32 inputs
  std::vector<std::string> exclude;   // rewrite passes to skip
  std::string name;                   // shown in profiles and errors
};

class Function {
 public:
  std::vector<Tensor> operator()(const std::vector<Tensor>& inputs);
  std::vector<Tensor> operator()(std::initializer_list<Tensor> inputs) {
    return (*this)(std::vector<Tensor>(inputs));
  }

  const std::string& name() const;
  const std::string& backend_name() const;
  const FunctionGraph& graph() const;  // the optimized graph
  const std::vector<PassStat>& rewrite_stats() const;
  std::size_t kernel_count() const;
  double compile_seconds() const;
  // theano.printing.debugprint of the optimized graph and the program's schedule.
  std::string debugprint() const;

  struct Impl;
  explicit Function(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

 private:
  std::shared_ptr<Impl> impl_;
};

Function function(const std::vector<Variable>& inputs, const std::vector<Variable>& outputs,
                  const Updates& updates = {}, const Givens& givens = {},
                  FunctionOptions options = {},
                  std::source_location loc = std::source_location::current());
// function(inputs, outputs, updates, options) without givens.
Function function(const std::vector<Variable>& inputs, const std::vector<Variable>& outputs,
                  const Updates& updates, FunctionOptions options,
                  std::source_location loc = std::source_location::current());

}  // namespace thea
