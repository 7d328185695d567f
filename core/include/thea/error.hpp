// The thea::Error family. Library code reports every user mistake by throwing one of
// these (never abort), with a message naming the op, the user's variable and its site.
#pragma once

#include <stdexcept>
#include <string>

namespace thea {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
// Wrong dtype or rank, or types that cannot be combined.
class TypeError : public Error {
 public:
  using Error::Error;
};
// Shapes that do not match or cannot broadcast.
class ShapeError : public Error {
 public:
  using Error::Error;
};
// Bad argument value (axis out of range, negative size, bad index).
class ValueError : public Error {
 public:
  using Error::Error;
};
// Missing, truncated or corrupt files.
class IoError : public Error {
 public:
  using Error::Error;
};
// grad(): cost not scalar, wrt not connected, op without a gradient.
class GradError : public Error {
 public:
  using Error::Error;
};
// A backend that is not built or cannot run here (no GPU, no compiler).
class BackendError : public Error {
 public:
  using Error::Error;
};
// Kernel code generation or compilation failed.
class CompileError : public Error {
 public:
  using Error::Error;
};

}  // namespace thea
