# Embeds one file into a C source as a byte array with a trailing NUL:
#   cmake -DIN=file -DOUT=file.c -DNAME=symbol -P this
# defines `const char NAME[]` and `const size_t NAME_len` (the file's size, without the NUL).
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" hexlen)
math(EXPR size "${hexlen} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
# Break the line every 16 bytes (80 characters) to keep the file readable.
string(REGEX REPLACE "((0x[0-9a-f][0-9a-f],){16})" "\\1\n    " bytes "${bytes}")
file(WRITE ${OUT}.tmp "/* Generated from ${IN} at build time. Do not edit. */\n#include <stddef.h>\n\nextern const char ${NAME}[];\nextern const size_t ${NAME}_len;\n\nconst char ${NAME}[] = {\n    ${bytes}0x00};\nconst size_t ${NAME}_len = ${size};\n")
execute_process(COMMAND ${CMAKE_COMMAND} -E copy_if_different ${OUT}.tmp ${OUT})
