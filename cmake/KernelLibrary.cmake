# The torch-free kernel core as a static library. Each ISA's files get that ISA's flags
# and nothing else does: the baseline files must run on any CPU of the architecture,
# so -march=native is never used.

set(MNV3EXT_KERNEL_DIR ${CMAKE_CURRENT_LIST_DIR}/../csrc/kernels)

# Flags per ISA; a file named *_<isa>.cpp is compiled with them.
set(MNV3EXT_FLAGS_avx2 -mavx2 -mfma -mf16c)
set(MNV3EXT_FLAGS_avx512 -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl -mavx512dq)
set(MNV3EXT_FLAGS_neon "")  # Advanced SIMD is part of the aarch64 baseline

function(mnv3ext_add_kernel_library target)
  set(isas scalar)
  if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
    list(APPEND isas avx2 avx512)
  elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64|ARM64)$")
    list(APPEND isas neon)
  endif()

  set(sources
    ${MNV3EXT_KERNEL_DIR}/dispatch.cpp
    ${MNV3EXT_KERNEL_DIR}/driver.cpp
    ${MNV3EXT_KERNEL_DIR}/thread_pool.cpp
    ${MNV3EXT_KERNEL_DIR}/gemm/pointwise.cpp
    ${MNV3EXT_KERNEL_DIR}/block/inverted_residual.cpp
    ${MNV3EXT_KERNEL_DIR}/sequence/sequence.cpp)
  foreach(isa IN LISTS isas)
    # One folder per kernel family beside the older top-level files.
    file(GLOB isa_sources ${MNV3EXT_KERNEL_DIR}/*_${isa}.cpp ${MNV3EXT_KERNEL_DIR}/*/*_${isa}.cpp)
    set_source_files_properties(${isa_sources} PROPERTIES COMPILE_OPTIONS "${MNV3EXT_FLAGS_${isa}}")
    list(APPEND sources ${isa_sources})
  endforeach()

  add_library(${target} STATIC ${sources})
  # Hidden: calls between the kernels (a GEMM tile per 12 rows) stay direct inside the extension
  # module instead of going through its PLT.
  set_target_properties(${target} PROPERTIES CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON)
  target_include_directories(${target} PUBLIC ${MNV3EXT_KERNEL_DIR}/..)
  find_package(Threads REQUIRED)
  target_link_libraries(${target} PUBLIC Threads::Threads)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    # No contraction of a separate multiply and add into an FMA: the compiler would do it in some
    # tile shapes and not others, and results must not depend on how work is tiled or split.
    target_compile_options(${target} PRIVATE -Wall -Wextra -ffp-contract=off)
  endif()
  if(MNV3EXT_SANITIZE)
    target_compile_options(${target} PUBLIC -fsanitize=address,undefined -fno-omit-frame-pointer
                                            -fno-sanitize-recover=undefined)
    target_link_options(${target} PUBLIC -fsanitize=address,undefined)
  endif()
endfunction()
