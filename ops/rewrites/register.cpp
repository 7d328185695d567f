#include "thea/rewrite.hpp"

namespace thea {

// The op-specific passes (canonicalize, stabilize, specialize, fusion, inplace) live in
// this folder; each file adds its passes here.
void register_op_rewrites(RewriteRegistry& /*registry*/) {}

}  // namespace thea
