/* The schema text and the Kemendagri region list, compiled into the library so
   that binaries need no data files. Paths come from CMake. Each blob is followed
   by its end label; neither is NUL-terminated. */
        .section .rodata
        .balign 16
        .global kolabus_events_fbs_begin
        .global kolabus_events_fbs_end
kolabus_events_fbs_begin:
        .incbin KOLABUS_EVENTS_FBS
kolabus_events_fbs_end:
        .byte 0
        .balign 16
        .global kolabus_wilayah_csv_begin
        .global kolabus_wilayah_csv_end
kolabus_wilayah_csv_begin:
        .incbin KOLABUS_WILAYAH_CSV
kolabus_wilayah_csv_end:
        .byte 0
        .section .note.GNU-stack,"",@progbits
