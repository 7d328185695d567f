#include "thea/printing.hpp"

#include <functional>
#include <sstream>
#include <unordered_map>

#include "thea/op.hpp"

namespace thea {

namespace {

// Theano-style ids: A..Z, BA, BB, ...
std::string id_string(std::size_t k) {
  std::string s;
  do {
    s.insert(s.begin(), static_cast<char>('A' + k % 26));
    k /= 26;
  } while (k > 0);
  return s;
}

std::string head(const Node& n) {
  switch (n.kind) {
    case NodeKind::Apply:
      return n.op->str();
    case NodeKind::Input:
      return n.name.empty() ? "<input>" : n.name;
    case NodeKind::Shared:
      return (n.name.empty() ? "<shared>" : n.name) + " (shared)";
    case NodeKind::Constant:
      return "constant{" + n.label() + "}";
  }
  return "?";
}

}  // namespace

std::string debugprint(const std::vector<NodePtr>& roots) {
  std::ostringstream os;
  std::unordered_map<const Node*, std::string> ids;
  std::function<void(const NodePtr&, const std::string&)> print = [&](const NodePtr& n,
                                                                      const std::string& prefix) {
    auto it = ids.find(n.get());
    const bool again = it != ids.end();
    if (!again) it = ids.emplace(n.get(), id_string(ids.size())).first;
    os << prefix << head(*n) << " [id " << it->second << "]";
    if (n->kind == NodeKind::Apply && !n->name.empty()) os << " '" << n->name << "'";
    if (!again) {
      os << "  " << n->type.str();
      if (!n->site.file.empty()) os << "  " << n->site.str();
    }
    os << "\n";
    if (again) return;
    const std::string child = prefix.empty() ? " |" : std::string(prefix.size(), ' ') + " |";
    for (const NodePtr& in : n->inputs) print(in, child);
  };
  for (const NodePtr& r : roots) print(r, "");
  return os.str();
}

std::string debugprint(const Variable& var) { return debugprint(std::vector<NodePtr>{var.node()}); }

std::string to_dot(const std::vector<NodePtr>& roots) {
  std::ostringstream os;
  os << "digraph thea {\n  rankdir=BT;\n  node [fontname=\"Helvetica\"];\n";
  std::unordered_map<const Node*, std::size_t> index;
  const std::vector<NodePtr> order = toposort(roots);
  auto escape = [](std::string s) {
    std::string out;
    for (char c : s) out += (c == '"' || c == '\\') ? std::string("\\") + c : std::string(1, c);
    return out;
  };
  for (const NodePtr& n : order) {
    const std::size_t k = index.size();
    index[n.get()] = k;
    std::string label = head(*n);
    if (n->kind == NodeKind::Apply && !n->name.empty()) label += "\\n'" + n->name + "'";
    label += "\\n" + n->type.str();
    const char* shape = n->kind == NodeKind::Apply ? "box" : "ellipse";
    const char* color = n->kind == NodeKind::Shared     ? "lightblue"
                        : n->kind == NodeKind::Input    ? "lightgreen"
                        : n->kind == NodeKind::Constant ? "lightgrey"
                                                        : "white";
    os << "  n" << k << " [shape=" << shape << ", style=filled, fillcolor=" << color << ", label=\""
       << escape(label) << "\"];\n";
  }
  for (const NodePtr& n : order)
    for (std::size_t i = 0; i < n->inputs.size(); ++i)
      os << "  n" << index[n->inputs[i].get()] << " -> n" << index[n.get()] << " [label=\"" << i
         << "\"];\n";
  os << "}\n";
  return os.str();
}

std::string to_dot(const std::vector<Variable>& outputs) {
  std::vector<NodePtr> roots;
  for (const Variable& v : outputs) roots.push_back(v.node());
  return to_dot(roots);
}

}  // namespace thea
