// attnkit/enum_names.h: one name table per public enum, shared by every text boundary.
//
// An enum that users spell as text (a registry parameter, a CLI option, a Python keyword)
// specializes EnumNames<E> next to its declaration with one table of {value, name} entries.
// The first entry of a value is its canonical name (what enum_name prints and enum_choices
// lists); later entries of the same value are accepted spellings (aliases). Every surface parses
// through parse_enum, so a new enumerator is added to one table and nowhere else.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "attnkit/status.h"

namespace attnkit {

template <class E>
struct EnumName {
  E value;
  const char* name;
};

// Specialized per enum, next to the enum: `static constexpr EnumName<E> kTable[] = {...};`.
template <class E>
struct EnumNames;

// The canonical name of v, or "unknown" for a value outside the table.
template <class E>
constexpr const char* enum_name(E v) {
  for (const EnumName<E>& e : EnumNames<E>::kTable)
    if (e.value == v) return e.name;
  return "unknown";
}

// Whether v is a value of the table (a value cast from an integer may be none of them).
template <class E>
constexpr bool enum_known(E v) {
  for (const EnumName<E>& e : EnumNames<E>::kTable)
    if (e.value == v) return true;
  return false;
}

// Parses a canonical name or an alias; false (and *out untouched) for anything else.
template <class E>
bool parse_enum(std::string_view s, E* out) {
  for (const EnumName<E>& e : EnumNames<E>::kTable) {
    if (s == e.name) {
      *out = e.value;
      return true;
    }
  }
  return false;
}

// True when the table's entry i is the first (canonical) entry of its value.
template <class E>
constexpr bool enum_entry_is_canonical(size_t i) {
  for (size_t j = 0; j < i; ++j)
    if (EnumNames<E>::kTable[j].value == EnumNames<E>::kTable[i].value) return false;
  return true;
}

// The canonical names joined with `sep` ("softmax|sigmoid|relu"); with quote, each in single
// quotes and the last joined by " or " ("'softmax', 'sigmoid' or 'relu'"), for prose messages.
template <class E>
std::string enum_choices(std::string_view sep = "|", bool quote = false) {
  constexpr size_t n = sizeof(EnumNames<E>::kTable) / sizeof(EnumNames<E>::kTable[0]);
  size_t count = 0;
  for (size_t i = 0; i < n; ++i) count += enum_entry_is_canonical<E>(i) ? 1 : 0;
  std::string out;
  size_t k = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!enum_entry_is_canonical<E>(i)) continue;
    if (k > 0) out.append(quote && k + 1 == count ? std::string_view(" or ") : sep);
    if (quote) out.push_back('\'');
    out.append(EnumNames<E>::kTable[i].name);
    if (quote) out.push_back('\'');
    ++k;
  }
  return out;
}

// Parses `value` of the parameter `param`; the error names both and lists the choices:
// "normalization 'tanh' is not supported; expected 'softmax', 'sigmoid' or 'relu'".
template <class E>
Status parse_enum_param(const char* param, std::string_view value, E* out) {
  if (parse_enum(value, out)) return Status::ok_status();
  return Status::invalid_argument(std::string(param) + " '" + std::string(value) + "' is not supported; expected " +
                                  enum_choices<E>(", ", true));
}

}  // namespace attnkit
