// One parameter (or gradient) tensor of a layer: storage the layer owns, or a view onto memory a
// caller bound to it (the C API's sy_layer_bind_param / sy_layer_bind_grad), so that a trainer's
// own tensors are read and accumulated into in place instead of being copied every step.
#pragma once

#include <algorithm>
#include <cstddef>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include "base/error.h"


namespace switchyard {

template <typename T>
class ParamTensor {
 public:
  using value_type = T;
  using iterator = T*;
  using const_iterator = const T*;

  ParamTensor() = default;
  explicit ParamTensor(size_t count) : owned_(count) { point_at_owned(); }  // zero-filled

  // A copy owns its values, also of a bound tensor: a copy (an optimizer moment, an expected
  // value in a test) must never write into the caller's memory. A fresh tensor's values are zeros.
  ParamTensor(const ParamTensor& other) { copy_values(other); }
  ParamTensor& operator=(const ParamTensor& other) {
    if (this != &other) copy_values(other);
    return *this;
  }
  // A move carries a binding along: expert migration moves the experts a rank keeps, and their
  // bindings with them.
  ParamTensor(ParamTensor&& other) noexcept { take(other); }
  ParamTensor& operator=(ParamTensor&& other) noexcept {
    if (this != &other) take(other);
    return *this;
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  T* begin() { return data_; }
  T* end() { return data_ + size_; }
  const T* begin() const { return data_; }
  const T* end() const { return data_ + size_; }
  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }

  // Replaces the tensor by count owned copies of value (a binding is released).
  void assign(size_t count, const T& value) {
    owned_.assign(count, value);
    point_at_owned();
  }

  bool bound() const { return bound_; }
  // Reads and writes external[0, count) from now on, with no copy: the values are whatever the
  // caller's memory holds. The owned storage is freed. The caller keeps external allocated and
  // unmoved until unbind(), another bind() or the tensor's destruction.
  void bind(T* external, size_t count) {
    require(external != nullptr, "ParamTensor::bind: the memory is NULL; use unbind()");
    require(count == size_, fmt::format("ParamTensor::bind: the memory holds {} elements but the "
                                        "tensor has {}",
                                        count, size_));
    std::vector<T>().swap(owned_);
    data_ = external;
    bound_ = true;
    fresh_ = false;
  }
  // Back to owned storage holding a copy of the current values (zeros when fresh); nothing when
  // not bound.
  void unbind() {
    if (!bound_) return;
    if (fresh_) {
      owned_.assign(size_, T(0));
    } else {
      owned_.assign(data_, data_ + size_);
    }
    point_at_owned();
  }

  // A gradient bound as memory that holds none yet (the C API's sy_layer_bind_fresh_grad: a new
  // tensor from an allocator, as autograd makes for a .grad that is None). Its values are never
  // read: the next backward writes the gradient instead of adding it, and whatever reads it
  // before that (a copy, unbind, zero_if_fresh) sees zeros. Saves the caller zeroing gigabytes
  // only for the layer to add onto them.
  void bind_fresh(T* external, size_t count) {
    bind(external, count);
    fresh_ = true;
  }
  // The same for the memory the tensor has now, bound or owned: a trainer's zeroing of its
  // gradients before a backward, without the pass over them.
  void mark_fresh() { fresh_ = true; }
  bool fresh() const { return fresh_; }
  // The layer wrote every element (a fresh tensor now holds a gradient).
  void mark_written() { fresh_ = false; }
  // A fresh tensor becomes zeros (before anything adds to it or reads it).
  void zero_if_fresh() {
    if (!fresh_) return;
    std::fill(begin(), end(), T(0));
    fresh_ = false;
  }

  friend bool operator==(const ParamTensor& a, const ParamTensor& b) {
    return std::equal(a.begin(), a.end(), b.begin(), b.end());
  }

 private:
  void point_at_owned() {
    data_ = owned_.data();
    size_ = owned_.size();
    bound_ = false;
    fresh_ = false;
  }
  void copy_values(const ParamTensor& other) {
    if (other.fresh_) {
      owned_.assign(other.size_, T(0));
    } else {
      owned_.assign(other.begin(), other.end());
    }
    point_at_owned();
  }
  void take(ParamTensor& other) {
    owned_ = std::move(other.owned_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    bound_ = std::exchange(other.bound_, false);
    fresh_ = std::exchange(other.fresh_, false);
    other.owned_.clear();
  }

  std::vector<T> owned_;  // empty while bound
  T* data_ = nullptr;     // owned_.data() or the bound memory
  size_t size_ = 0;
  bool bound_ = false;
  bool fresh_ = false;    // bound memory holding no values yet (bind_fresh)
};

}  // namespace switchyard
