# The README's C API example, compiled and run exactly as the README shows it,
# so the documentation cannot drift from the API.
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/README.md)
file(READ ${PROJECT_SOURCE_DIR}/README.md spectral_readme)
string(FIND "${spectral_readme}" "## The C API" spectral_api_at)
string(SUBSTRING "${spectral_readme}" ${spectral_api_at} -1 spectral_api_section)
string(FIND "${spectral_api_section}" "```c\n" spectral_code_at)
if(spectral_api_at LESS 0 OR spectral_code_at LESS 0)
  message(FATAL_ERROR "README.md: no ```c block under '## The C API'")
endif()
math(EXPR spectral_code_at "${spectral_code_at} + 5")
string(SUBSTRING "${spectral_api_section}" ${spectral_code_at} -1 spectral_code)
string(FIND "${spectral_code}" "```" spectral_code_end)
string(SUBSTRING "${spectral_code}" 0 ${spectral_code_end} spectral_code)
file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/readme_example.c "${spectral_code}")
add_executable(readme_example ${CMAKE_CURRENT_BINARY_DIR}/readme_example.c)
target_link_libraries(readme_example PRIVATE spectral)
add_test(NAME test_readme_example
         COMMAND readme_example ${PROJECT_SOURCE_DIR}/models/spectral-default.gguf "hello world")
