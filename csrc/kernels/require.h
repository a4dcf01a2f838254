// Argument checks of the torch-free entry points: a failed check throws std::invalid_argument
// with a message that starts with the argument's name (the binding turns it into ValueError).
#pragma once

#include <stdexcept>
#include <string>

namespace mnv3ext {

inline void require(bool condition, const std::string& message) {
  if (!condition) throw std::invalid_argument(message);
}

}  // namespace mnv3ext
