# kolabus_flatc_cpp(<outputs_var> OUTPUT_DIR <dir> SCHEMAS <fbs...> [COMMENT <text>])
#
# Generates C++ from FlatBuffers schemas with the one set of flatc options kolabus builds
# with. The schemas of this tree (schemas/) and those of old releases (tests/upgrade/)
# go through it both, so an old client is the code a client built then has. Each schema
# gives <OUTPUT_DIR>/<stem>_generated.h; their paths are set in <outputs_var>, for the
# sources of the targets that include them. SCHEMAS are absolute or relative to the
# calling CMakeLists.txt's directory, where flatc runs; it finds a schema's includes
# beside it.
function(kolabus_flatc_cpp outputs_var)
  cmake_parse_arguments(ARG "" "OUTPUT_DIR;COMMENT" "SCHEMAS" ${ARGN})
  if(NOT ARG_OUTPUT_DIR OR NOT ARG_SCHEMAS OR ARG_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR
      "usage: kolabus_flatc_cpp(<outputs_var> OUTPUT_DIR <dir> SCHEMAS <fbs...> [COMMENT <text>])")
  endif()
  if(NOT ARG_COMMENT)
    set(ARG_COMMENT "flatc: generating C++ into ${ARG_OUTPUT_DIR}")
  endif()
  set(outputs)
  foreach(fbs IN LISTS ARG_SCHEMAS)
    get_filename_component(stem ${fbs} NAME_WE)
    list(APPEND outputs ${ARG_OUTPUT_DIR}/${stem}_generated.h)
  endforeach()
  add_custom_command(
    OUTPUT ${outputs}
    COMMAND flatbuffers::flatc --cpp --scoped-enums --gen-object-api -o ${ARG_OUTPUT_DIR}
            ${ARG_SCHEMAS}
    DEPENDS ${ARG_SCHEMAS} flatbuffers::flatc
    WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR}
    COMMENT "${ARG_COMMENT}")
  set(${outputs_var} ${outputs} PARENT_SCOPE)
endfunction()
