// The whole public API: #include <thea/thea.hpp>.
#pragma once

#include "thea/backend.hpp"
#include "thea/dtype.hpp"
#include "thea/error.hpp"
#include "thea/fgraph.hpp"
#include "thea/function.hpp"
#include "thea/grad.hpp"
#include "thea/graph.hpp"
#include "thea/op.hpp"
#include "thea/ops/api.hpp"
#include "thea/printing.hpp"
#include "thea/rewrite.hpp"
#include "thea/tensor.hpp"
#include "thea/type.hpp"
