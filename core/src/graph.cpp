#include "thea/graph.hpp"

#include <atomic>
#include <sstream>
#include <unordered_set>

#include "thea/error.hpp"
#include "thea/op.hpp"

namespace thea {

SourceSite SourceSite::from(const std::source_location& loc) {
  SourceSite site;
  std::string file = loc.file_name();
  auto slash = file.find_last_of('/');
  site.file = slash == std::string::npos ? file : file.substr(slash + 1);
  site.line = loc.line();
  site.function = loc.function_name();
  return site;
}

std::string SourceSite::str() const {
  if (file.empty()) return "<unknown>";
  return file + ":" + std::to_string(line);
}

std::uint64_t next_node_id() {
  static std::atomic<std::uint64_t> counter{0};
  return ++counter;
}

std::string Node::label() const {
  if (!name.empty()) return name;
  switch (kind) {
    case NodeKind::Input:
      return "<input>";
    case NodeKind::Shared:
      return "<shared>";
    case NodeKind::Constant:
      if (value.defined() && value.numel() == 1) {
        std::ostringstream os;
        os << value.item<double>();
        return os.str();
      }
      return "<constant " + shape_str(value.shape()) + ">";
    case NodeKind::Apply:
      break;
  }
  std::string s = op ? op->name() : "?";
  s += "(";
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (i) s += ", ";
    const Node& in = *inputs[i];
    s += in.kind == NodeKind::Apply && in.name.empty() ? (in.op ? in.op->name() + "(..)" : "?")
                                                       : in.label();
  }
  return s + ")";
}

std::string Node::describe() const {
  std::string s = label() + " (" + type.str();
  if (!site.file.empty()) s += ", created at " + site.str();
  return s + ")";
}

NodePtr make_input(TensorType type, std::string name, const std::source_location& loc) {
  auto n = std::make_shared<Node>();
  n->kind = NodeKind::Input;
  n->type = std::move(type);
  n->name = std::move(name);
  n->site = SourceSite::from(loc);
  n->id = next_node_id();
  return n;
}

NodePtr make_constant(Tensor value, std::string name) {
  if (!value.defined()) throw ValueError("constant: the tensor is undefined (default-constructed)");
  auto n = std::make_shared<Node>();
  n->kind = NodeKind::Constant;
  n->type = TensorType::of(value);
  n->value = value.contiguous();
  n->name = std::move(name);
  n->id = next_node_id();
  return n;
}

NodePtr make_shared(Tensor value, std::string name, const std::source_location& loc) {
  if (!value.defined())
    throw ValueError("shared '" + name + "': the initial value is an undefined tensor");
  auto n = std::make_shared<Node>();
  n->kind = NodeKind::Shared;
  // Shape is checked on set_value, so the type can carry every size statically.
  n->type = TensorType::of(value);
  n->shared = std::make_shared<SharedState>();
  n->shared->value = value.clone();
  n->name = std::move(name);
  n->site = SourceSite::from(loc);
  n->id = next_node_id();
  return n;
}

NodePtr make_apply_at(OpPtr op, std::vector<NodePtr> inputs, const SourceSite& site) {
  for (std::size_t i = 0; i < inputs.size(); ++i)
    if (!inputs[i])
      throw ValueError("[" + op->name() + "] at " + site.str() + ": input " + std::to_string(i) +
                       " is an empty Variable (default-constructed, never assigned)");
  auto n = std::make_shared<Node>();
  n->kind = NodeKind::Apply;
  n->site = site;
  try {
    n->type = op->infer_type(inputs);
  } catch (const Error& e) {
    std::string msg =
        "[" + op->str() + "] at " + site.str() + ": " + e.what() + "\n" + describe_inputs(inputs);
    if (dynamic_cast<const ShapeError*>(&e)) throw ShapeError(msg);
    if (dynamic_cast<const TypeError*>(&e)) throw TypeError(msg);
    if (dynamic_cast<const ValueError*>(&e)) throw ValueError(msg);
    throw Error(msg);
  }
  n->op = std::move(op);
  n->inputs = std::move(inputs);
  n->id = next_node_id();
  return n;
}

NodePtr make_apply(OpPtr op, std::vector<NodePtr> inputs, const std::source_location& loc,
                   std::string name) {
  NodePtr n = make_apply_at(std::move(op), std::move(inputs), SourceSite::from(loc));
  n->name = std::move(name);
  return n;
}

// ---- Variable ----

static NodePtr weak_literal(Tensor t) {
  NodePtr n = make_constant(std::move(t));
  n->weak_literal = true;
  return n;
}

Variable::Variable(double value) : node_(weak_literal(Tensor::scalar(value, Dtype::Float64))) {}
Variable::Variable(int value) : node_(weak_literal(Tensor::scalar(value, Dtype::Int64))) {}
Variable::Variable(std::int64_t value)
    : node_(weak_literal(Tensor::scalar(static_cast<double>(value), Dtype::Int64))) {}
Variable::Variable(const Tensor& value) : node_(make_constant(value)) {}

static const Node& checked(const NodePtr& n) {
  if (!n) throw ValueError("use of an empty Variable (default-constructed, never assigned)");
  return *n;
}

const TensorType& Variable::type() const { return checked(node_).type; }
const std::string& Variable::name() const { return checked(node_).name; }
Variable& Variable::set_name(std::string name) {
  checked(node_);
  node_->name = std::move(name);
  return *this;
}
std::string Variable::describe() const { return node_ ? node_->describe() : "<empty Variable>"; }

static SharedState& shared_state(const NodePtr& n, const char* what) {
  const Node& node = checked(n);
  if (node.kind != NodeKind::Shared)
    throw TypeError(std::string(what) + ": " + node.describe() + " is not a shared variable");
  return *node.shared;
}

Tensor Variable::get_value() const {
  SharedState& s = shared_state(node_, "get_value");
  if (!s.host_valid && s.mirror) {
    s.mirror->download(s.value);
    s.host_valid = true;
  }
  return s.value.clone();
}

void Variable::set_value(const Tensor& value) {
  SharedState& s = shared_state(node_, "set_value");
  if (!value.defined()) throw ValueError("set_value on " + describe() + ": undefined tensor");
  if (value.dtype() != s.value.dtype())
    throw TypeError("set_value on " + describe() + ": got " + value.describe() + ", expected " +
                    s.value.describe() + " (dtypes differ; use astype)");
  if (value.shape() != s.value.shape())
    throw ShapeError("set_value on " + describe() + ": got shape " + shape_str(value.shape()) +
                     ", expected " + shape_str(s.value.shape()));
  // Copy into the existing buffer: compiled programs may hold pointers to it.
  s.value.copy_from(value);
  s.host_valid = true;
  ++s.version;
  if (s.mirror) s.mirror->host_changed();
}

// ---- constructors ----

Variable tensor(Dtype dtype, int ndim, std::string name, std::source_location loc) {
  if (ndim < 0) throw ValueError("tensor: negative rank " + std::to_string(ndim));
  return Variable(make_input(TensorType::of_rank(dtype, ndim), std::move(name), loc));
}

Variable tensor(Dtype dtype, Shape static_shape, std::string name, std::source_location loc) {
  for (auto d : static_shape)
    if (d < kUnknownDim)
      throw ValueError("tensor '" + name + "': bad static size " + std::to_string(d) +
                       " (use -1 for unknown)");
  return Variable(make_input(TensorType(dtype, std::move(static_shape)), std::move(name), loc));
}

#define THEA_DEFINE_CTOR(fn, DT, NDIM)                      \
  Variable fn(std::string name, std::source_location loc) { \
    return tensor(Dtype::DT, NDIM, std::move(name), loc);   \
  }
#define THEA_DEFINE_CTORS(prefix, DT)      \
  THEA_DEFINE_CTOR(prefix##scalar, DT, 0)  \
  THEA_DEFINE_CTOR(prefix##vector, DT, 1)  \
  THEA_DEFINE_CTOR(prefix##matrix, DT, 2)  \
  THEA_DEFINE_CTOR(prefix##tensor3, DT, 3) \
  THEA_DEFINE_CTOR(prefix##tensor4, DT, 4)
THEA_DEFINE_CTORS(, Float32)
THEA_DEFINE_CTORS(f, Float32)
THEA_DEFINE_CTORS(d, Float64)
THEA_DEFINE_CTORS(i, Int32)
THEA_DEFINE_CTORS(l, Int64)
THEA_DEFINE_CTORS(b, UInt8)

Variable shared(const Tensor& value, std::string name, std::source_location loc) {
  return Variable(make_shared(value, std::move(name), loc));
}

Variable constant(const Tensor& value, std::string name) {
  return Variable(make_constant(value, std::move(name)));
}

std::vector<NodePtr> toposort(const std::vector<NodePtr>& outputs) {
  // Iterative DFS: graphs from long unrolled loops must not overflow the stack.
  std::vector<NodePtr> order;
  std::unordered_set<const Node*> done;
  std::unordered_set<const Node*> on_stack;
  std::vector<std::pair<NodePtr, std::size_t>> stack;
  for (const NodePtr& root : outputs) {
    if (!root || done.count(root.get())) continue;
    stack.emplace_back(root, 0);
    on_stack.insert(root.get());
    while (!stack.empty()) {
      auto& [node, next] = stack.back();
      if (next < node->inputs.size()) {
        const NodePtr& in = node->inputs[next++];
        if (!done.count(in.get()) && !on_stack.count(in.get())) {
          on_stack.insert(in.get());
          stack.emplace_back(in, 0);
        }
      } else {
        done.insert(node.get());
        on_stack.erase(node.get());
        order.push_back(node);
        stack.pop_back();
      }
    }
  }
  return order;
}

}  // namespace thea
