#include "thea/ops/scalar.hpp"

#include <array>

namespace thea {
namespace {

using K = ScalarOutKind;
// Order must follow the ScalarOp enum.
constexpr std::array<ScalarOpInfo, static_cast<std::size_t>(ScalarOp::Count_)> kTable = {{
    {"neg", "thea_neg", 1, K::Same, "-"},
    {"abs", "thea_abs", 1, K::Same, nullptr},
    {"sgn", "thea_sign", 1, K::Same, nullptr},
    {"exp", "thea_exp", 1, K::Float, nullptr},
    {"log", "thea_log", 1, K::Float, nullptr},
    {"log1p", "thea_log1p", 1, K::Float, nullptr},
    {"sqrt", "thea_sqrt", 1, K::Float, nullptr},
    {"sqr", "thea_sqr", 1, K::Same, nullptr},
    {"inv", "thea_inv", 1, K::Float, nullptr},
    {"tanh", "thea_tanh", 1, K::Float, nullptr},
    {"sigmoid", "thea_sigmoid", 1, K::Float, nullptr},
    {"softplus", "thea_softplus", 1, K::Float, nullptr},
    {"not", "thea_not", 1, K::Bool, "!"},
    {"identity", "thea_identity", 1, K::Same, nullptr},
    {"cast", "thea_cast", 1, K::Explicit, nullptr},
    {"add", "thea_add", 2, K::Same, "+"},
    {"sub", "thea_sub", 2, K::Same, "-"},
    {"mul", "thea_mul", 2, K::Same, "*"},
    {"true_div", "thea_div", 2, K::Float, "/"},
    {"pow", "thea_pow", 2, K::Same, "**"},
    {"maximum", "thea_maximum", 2, K::Same, nullptr},
    {"minimum", "thea_minimum", 2, K::Same, nullptr},
    {"lt", "thea_lt", 2, K::Bool, "<"},
    {"le", "thea_le", 2, K::Bool, "<="},
    {"gt", "thea_gt", 2, K::Bool, ">"},
    {"ge", "thea_ge", 2, K::Bool, ">="},
    {"eq", "thea_eq", 2, K::Bool, "=="},
    {"neq", "thea_ne", 2, K::Bool, "!="},
    {"and", "thea_and", 2, K::Bool, "&&"},
    {"or", "thea_or", 2, K::Bool, "||"},
    {"second", "thea_second", 2, K::Last, nullptr},
    {"switch", "thea_switch", 3, K::Last, nullptr},
    {"clip", "thea_clip", 3, K::Same, nullptr},
}};

}  // namespace

const ScalarOpInfo& scalar_info(ScalarOp op) { return kTable[static_cast<std::size_t>(op)]; }

}  // namespace thea
