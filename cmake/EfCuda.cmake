# EF_CUDA=ON: the CUDA kernels and the CUDA model (cpp/src/cuda/) are compiled into an object library that joins
# edgeformer_core, with the CUDA runtime linked statically so that the extension needs only the NVIDIA driver.
# Included at file scope (enable_language must be), only when EF_CUDA is on; without it, cuda_stub.cc stands in.
#
# Architectures: machine code for Ampere (sm_80, sm_86), Ada (sm_89) and Hopper (sm_90), plus compute_90 PTX
# that the driver compiles for newer GPUs. -DCMAKE_CUDA_ARCHITECTURES=90 (or the CUDAARCHS environment
# variable) builds one target, much faster while developing.
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES AND NOT DEFINED ENV{CUDAARCHS})
  set(CMAKE_CUDA_ARCHITECTURES "80-real;86-real;89-real;90-real;90-virtual")
endif()
enable_language(CUDA)
if(CMAKE_CUDA_COMPILER_VERSION VERSION_LESS 12.0)
  message(FATAL_ERROR "EF_CUDA needs the CUDA toolkit 12 or newer; ${CMAKE_CUDA_COMPILER} is ${CMAKE_CUDA_COMPILER_VERSION}")
endif()
find_package(CUDAToolkit REQUIRED)
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
if(EF_CCACHE)
  set(CMAKE_CUDA_COMPILER_LAUNCHER ${EF_CCACHE})
endif()
message(STATUS "edgeformer: CUDA ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES}")

add_library(edgeformer_cuda OBJECT
  cpp/src/cuda/common.cc
  cpp/src/cuda/host.cc
  cpp/src/cuda/cuda_model.cc
  cpp/src/cuda/cuda_upload.cc
  cpp/src/cuda/cuda_api.cc
  cpp/src/cuda/blas.cc
  cpp/src/cuda/elementwise.cu
  cpp/src/cuda/gemm.cu
  cpp/src/cuda/attention.cu
  cpp/src/cuda/sample.cu)
target_include_directories(edgeformer_cuda PRIVATE cpp/include cpp/src)
target_link_libraries(edgeformer_cuda PRIVATE CUDA::cudart_static)  # for its include directories
set_target_properties(edgeformer_cuda PROPERTIES POSITION_INDEPENDENT_CODE ON)
target_compile_options(edgeformer_cuda PRIVATE
  $<$<COMPILE_LANGUAGE:CUDA>:-lineinfo>                        # source lines for ncu / compute-sanitizer
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>)
