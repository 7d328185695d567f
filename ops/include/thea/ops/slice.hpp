// numpy's basic-slice normalisation, shared by Subtensor::perform/infer_shape and the
// backends that resolve views themselves (the CUDA program), so all agree on every edge case.
#pragma once

#include <cstdint>
#include <optional>

namespace thea {

// A resolved slice of one axis: the view starts at element `start`, takes `length`
// elements, `step` apart (step may be negative). start is meaningful only when length > 0.
struct SliceRange {
  std::int64_t start = 0, length = 0, step = 1;
};

// CPython's PySlice_AdjustIndices for an axis of size `dim`: absent bounds default by the
// step's sign, negative ones count from the end, out-of-range ones clamp (so a slice past
// the end is short or empty, never an error). Throws ValueError for a zero step.
SliceRange resolve_slice(std::optional<std::int64_t> start, std::optional<std::int64_t> stop,
                         std::optional<std::int64_t> step, std::int64_t dim);

}  // namespace thea
