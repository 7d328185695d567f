// The symbolic graph. Every Node has exactly one output, so a Node *is* the variable it
// produces: leaves are inputs, shared variables and constants; inner nodes apply an Op.
// Variable is the user-facing handle (cheap to copy, shares the Node).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <source_location>
#include <string>
#include <vector>

#include "thea/tensor.hpp"
#include "thea/type.hpp"

namespace thea {

class Op;
class Node;
class Variable;
using NodePtr = std::shared_ptr<Node>;
using OpPtr = std::shared_ptr<const Op>;

// Where the user created a variable; every error message quotes it.
struct SourceSite {
  std::string file;  // basename only, as users read it
  std::uint32_t line = 0;
  std::string function;
  static SourceSite from(const std::source_location& loc);
  std::string str() const;  // "train.cpp:12"
};

// Lets a backend keep the authoritative copy of a shared value elsewhere (a GPU).
class DeviceMirror {
 public:
  virtual ~DeviceMirror() = default;
  // Copy the device value into `host` (same shape and dtype).
  virtual void download(Tensor& host) = 0;
  // The host value changed (set_value); the device copy must be refreshed before use.
  virtual void host_changed() = 0;
};

// State of a shared variable: persists across function calls.
struct SharedState {
  Tensor value;
  bool host_valid = true;  // false while a DeviceMirror holds a newer value
  std::shared_ptr<DeviceMirror> mirror;
  std::uint64_t version = 0;  // bumped on every host-side change
};

enum class NodeKind : std::uint8_t { Input, Shared, Constant, Apply };

class Node {
 public:
  NodeKind kind = NodeKind::Apply;
  OpPtr op;                     // Apply only
  std::vector<NodePtr> inputs;  // Apply only
  TensorType type;
  std::string name;  // user's name, may be empty
  SourceSite site;
  Tensor value;                         // Constant only
  std::shared_ptr<SharedState> shared;  // Shared only
  std::uint64_t id = 0;                 // creation order; stable tie-break for printing
  // A constant written as a C++ literal: it takes the dtype of the tensor it meets
  // (JAX's weak types; Theano's autocast of Python scalars).
  bool weak_literal = false;

  bool is_leaf() const { return kind != NodeKind::Apply; }
  // "X (fmatrix, created at train.cpp:12)" or "dot(X, w) (fmatrix, created at ...)"
  std::string describe() const;
  // Short label used in printing: the user's name, or op name, or the constant value.
  std::string label() const;
};

std::uint64_t next_node_id();

// Create nodes. make_apply runs the op's type inference and turns its errors into
// messages naming the op, each input variable and the user's call site.
NodePtr make_input(TensorType type, std::string name, const std::source_location& loc);
NodePtr make_constant(Tensor value, std::string name = {});
NodePtr make_shared(Tensor value, std::string name, const std::source_location& loc);
NodePtr make_apply(OpPtr op, std::vector<NodePtr> inputs, const std::source_location& loc,
                   std::string name = {});
// Same as make_apply with the site copied from an existing node (used by rewrites).
NodePtr make_apply_at(OpPtr op, std::vector<NodePtr> inputs, const SourceSite& site);

class Variable {
 public:
  Variable() = default;
  explicit Variable(NodePtr node) : node_(std::move(node)) {}
  // Weak literal constants (float64 / int64 scalars that adopt the other operand's dtype).
  Variable(double value);         // NOLINT(google-explicit-constructor): Theano-style literals
  Variable(int value);            // NOLINT(google-explicit-constructor)
  Variable(std::int64_t value);   // NOLINT(google-explicit-constructor)
  Variable(const Tensor& value);  // NOLINT(google-explicit-constructor)

  const NodePtr& node() const { return node_; }
  explicit operator bool() const { return node_ != nullptr; }
  const TensorType& type() const;
  Dtype dtype() const { return type().dtype; }
  int ndim() const { return type().ndim(); }
  const std::string& name() const;
  Variable& set_name(std::string name);
  std::string describe() const;
  bool is_shared() const { return node_ && node_->kind == NodeKind::Shared; }
  bool is_constant() const { return node_ && node_->kind == NodeKind::Constant; }

  // Shared variables only: current value (copied back from a device if needed)...
  Tensor get_value() const;
  // ...and a new value of the same dtype and shape (copied; the caller keeps theirs).
  void set_value(const Tensor& value);

  // Theano's .T, .shape-free helpers.
  Variable T(std::source_location loc = std::source_location::current()) const;

  bool same_as(const Variable& o) const { return node_ == o.node_; }

 private:
  NodePtr node_;
};

// Captures the caller's source location through an implicit conversion, so operators
// (which cannot take default arguments) still record where the user wrote them.
struct VarAt {
  Variable var;
  std::source_location loc;
  VarAt(const Variable& v,  // NOLINT(google-explicit-constructor)
        std::source_location l = std::source_location::current())
      : var(v), loc(l) {}
  VarAt(double v,  // NOLINT(google-explicit-constructor): 0.05 * g
        std::source_location l = std::source_location::current())
      : var(v), loc(l) {}
  VarAt(int v,  // NOLINT(google-explicit-constructor): 2 * x
        std::source_location l = std::source_location::current())
      : var(v), loc(l) {}
  VarAt(std::int64_t v,  // NOLINT(google-explicit-constructor): bs * i
        std::source_location l = std::source_location::current())
      : var(v), loc(l) {}
};

// Symbolic variable constructors (Theano's T.fmatrix("X"), ...).
Variable tensor(Dtype dtype, int ndim, std::string name = {},
                std::source_location loc = std::source_location::current());
Variable tensor(Dtype dtype, Shape static_shape, std::string name = {},
                std::source_location loc = std::source_location::current());

#define THEA_DECLARE_CTOR(fn, DT, NDIM) \
  Variable fn(std::string name = {}, std::source_location loc = std::source_location::current());
#define THEA_DECLARE_CTORS(prefix, DT)      \
  THEA_DECLARE_CTOR(prefix##scalar, DT, 0)  \
  THEA_DECLARE_CTOR(prefix##vector, DT, 1)  \
  THEA_DECLARE_CTOR(prefix##matrix, DT, 2)  \
  THEA_DECLARE_CTOR(prefix##tensor3, DT, 3) \
  THEA_DECLARE_CTOR(prefix##tensor4, DT, 4)
THEA_DECLARE_CTORS(, Float32)  // scalar, vector, ... are floatX = float32
THEA_DECLARE_CTORS(f, Float32)
THEA_DECLARE_CTORS(d, Float64)
THEA_DECLARE_CTORS(i, Int32)
THEA_DECLARE_CTORS(l, Int64)
THEA_DECLARE_CTORS(b, UInt8)
#undef THEA_DECLARE_CTORS
#undef THEA_DECLARE_CTOR

// theano.shared: state that persists across calls. The value is copied.
Variable shared(const Tensor& value, std::string name = {},
                std::source_location loc = std::source_location::current());
Variable constant(const Tensor& value, std::string name = {});

// Topological order (inputs before users) of everything `outputs` depend on.
std::vector<NodePtr> toposort(const std::vector<NodePtr>& outputs);

}  // namespace thea
