#include "thea/op.hpp"

#include <functional>
#include <typeinfo>

namespace thea {

std::vector<Variable> Op::vjp(const std::vector<Variable>& inputs, const Variable&,
                              const Variable&) const {
  return std::vector<Variable>(inputs.size());
}

bool Op::equals(const Op& other) const {
  return typeid(*this) == typeid(other) && name() == other.name() && params() == other.params();
}

std::size_t Op::hash() const { return std::hash<std::string>{}(str()); }

std::string Op::str() const {
  std::string p = params();
  return p.empty() ? name() : name() + "{" + p + "}";
}

std::string describe_inputs(const std::vector<NodePtr>& inputs) {
  std::string s;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    s += "  input " + std::to_string(i) + ": " + (inputs[i] ? inputs[i]->describe() : "<empty>");
    if (i + 1 < inputs.size()) s += "\n";
  }
  return s;
}

}  // namespace thea
