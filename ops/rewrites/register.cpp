#include "rewrite_util.hpp"
#include "thea/rewrite.hpp"

namespace thea {

// The op-specific passes live in this folder (see README.md for who owns which); each
// file adds its passes here.
void register_op_rewrites(RewriteRegistry& registry) {
  rw::register_canonicalize_rewrites(registry);  // order 10..
  rw::register_stabilize_rewrites(registry);     // order 20..
  rw::register_specialize_rewrites(registry);    // order 30..39
}

}  // namespace thea
