# OTA A/B slot selection for U-Boot (hush) -- boot contract v1 (see ../README.md).
# Compile: mkimage -A arm -T script -C none -n "OTA boot" -d boot.cmd boot.scr
#
# Reads three environment variables and boots one of two slots:
#   OTA_PRIMARY  A|B      committed slot; anything else (or unset) means A
#   OTA_TRIAL    A|B|""   slot armed for trial boots
#   OTA_TRIES    0..9     trial boots left; anything else means 0
# A trial boot decrements OTA_TRIES and runs saveenv BEFORE booting; a committed boot
# never writes the environment. saveenv stores the whole runtime environment, so this
# script touches nothing but OTA_TRIES (and its scratch variable ota_boot, deleted
# again) before saveenv, and sets its helper variables only afterwards.
#
# Board configuration, read from the environment (defaults in brackets):
#   ota_devtype    storage interface for load [mmc]
#   ota_devnum     device number [0]
#   ota_A_part, ota_B_part   partition of each slot [2, 3]
#   ota_A_root, ota_B_root   kernel root= [/dev/mmcblk0p2, /dev/mmcblk0p3]
#   ota_kernel     kernel image path inside the slot [/boot/Image]
#   ota_fdtfile    device tree path inside the slot [empty: U-Boot's own, ${fdtcontroladdr}]
#   ota_initrd     initrd path inside the slot [empty: none]
#   ota_bootcmd    booti (arm64), bootz (arm32) or zboot (x86 bzImage) [booti]
#   ota_cmdline    extra kernel arguments [rootwait ro]
# Also used: kernel_addr_r, fdt_addr_r, ramdisk_addr_r (standard board variables).
# Variables owned by this script (never store them): ota_boot, ota_fallback, ota_primary,
# ota_slot, ota_part, ota_root, ota_rd, ota_rd_addr, ota_rd_size, ota_fdt.

# ---- 1. selection: only OTA_TRIES and ota_boot change before saveenv ----
setenv ota_boot
if test "${OTA_PRIMARY}" = "B"; then
    if test "${OTA_TRIAL}" = "A"; then
        setenv ota_boot A
    fi
elif test "${OTA_TRIAL}" = "B"; then
    setenv ota_boot B
fi

# hush has no arithmetic here: decrement by table. Anything but 1..9 means no tries.
if test -n "${ota_boot}"; then
    if test "${OTA_TRIES}" = "9"; then
        setenv OTA_TRIES 8
    elif test "${OTA_TRIES}" = "8"; then
        setenv OTA_TRIES 7
    elif test "${OTA_TRIES}" = "7"; then
        setenv OTA_TRIES 6
    elif test "${OTA_TRIES}" = "6"; then
        setenv OTA_TRIES 5
    elif test "${OTA_TRIES}" = "5"; then
        setenv OTA_TRIES 4
    elif test "${OTA_TRIES}" = "4"; then
        setenv OTA_TRIES 3
    elif test "${OTA_TRIES}" = "3"; then
        setenv OTA_TRIES 2
    elif test "${OTA_TRIES}" = "2"; then
        setenv OTA_TRIES 1
    elif test "${OTA_TRIES}" = "1"; then
        setenv OTA_TRIES 0
    else
        setenv ota_boot
    fi
fi

if test -n "${ota_boot}"; then
    # Count the try before booting, so a hang, panic or power cut uses it up.
    # If it cannot be saved, do not boot the trial at all: an uncounted trial could loop.
    setenv ota_boot
    if saveenv; then
        setenv ota_boot "${OTA_TRIAL}"
    fi
fi

# ---- 2. boot: helper variables from here on are never saved ----
if test "${OTA_PRIMARY}" = "B"; then
    setenv ota_primary B
else
    setenv ota_primary A
fi
if test -n "${ota_boot}"; then
    setenv ota_fallback "${ota_primary}"
else
    setenv ota_boot "${ota_primary}"
    setenv ota_fallback
fi

if test -z "${ota_devtype}"; then setenv ota_devtype mmc; fi
if test -z "${ota_devnum}"; then setenv ota_devnum 0; fi
if test -z "${ota_A_part}"; then setenv ota_A_part 2; fi
if test -z "${ota_B_part}"; then setenv ota_B_part 3; fi
if test -z "${ota_A_root}"; then setenv ota_A_root /dev/mmcblk0p2; fi
if test -z "${ota_B_root}"; then setenv ota_B_root /dev/mmcblk0p3; fi
if test -z "${ota_kernel}"; then setenv ota_kernel /boot/Image; fi
if test -z "${ota_bootcmd}"; then setenv ota_bootcmd booti; fi
if test -z "${ota_cmdline}"; then setenv ota_cmdline "rootwait ro"; fi

# First attempt: the selected slot.
setenv ota_slot "${ota_boot}"
if test "${ota_slot}" = "B"; then
    setenv ota_part "${ota_B_part}"
    setenv ota_root "${ota_B_root}"
else
    setenv ota_part "${ota_A_part}"
    setenv ota_root "${ota_A_root}"
fi
setenv bootargs "root=${ota_root} ${ota_cmdline} ota.slot=${ota_slot}"
echo "OTA: booting slot ${ota_slot} (primary ${ota_primary}, fallback ${ota_fallback})"
if load ${ota_devtype} ${ota_devnum}:${ota_part} ${kernel_addr_r} ${ota_kernel}; then
    setenv ota_fdt "${fdtcontroladdr}"
    if test -n "${ota_fdtfile}"; then
        if load ${ota_devtype} ${ota_devnum}:${ota_part} ${fdt_addr_r} ${ota_fdtfile}; then
            setenv ota_fdt "${fdt_addr_r}"
        fi
    fi
    setenv ota_rd -
    setenv ota_rd_addr 0
    setenv ota_rd_size 0
    if test -n "${ota_initrd}"; then
        if load ${ota_devtype} ${ota_devnum}:${ota_part} ${ramdisk_addr_r} ${ota_initrd}; then
            setenv ota_rd "${ramdisk_addr_r}:${filesize}"
            setenv ota_rd_addr "${ramdisk_addr_r}"
            setenv ota_rd_size "${filesize}"
        fi
    fi
    if test "${ota_bootcmd}" = "bootz"; then
        bootz ${kernel_addr_r} ${ota_rd} ${ota_fdt}
    elif test "${ota_bootcmd}" = "zboot"; then
        zboot ${kernel_addr_r} 0 ${ota_rd_addr} ${ota_rd_size}
    else
        booti ${kernel_addr_r} ${ota_rd} ${ota_fdt}
    fi
fi

# Only reached if the selected slot failed to load or boot: on a trial boot, the primary.
if test -n "${ota_fallback}"; then
    setenv ota_slot "${ota_fallback}"
    if test "${ota_slot}" = "B"; then
        setenv ota_part "${ota_B_part}"
        setenv ota_root "${ota_B_root}"
    else
        setenv ota_part "${ota_A_part}"
        setenv ota_root "${ota_A_root}"
    fi
    setenv bootargs "root=${ota_root} ${ota_cmdline} ota.slot=${ota_slot}"
    echo "OTA: trial slot ${ota_boot} failed, falling back to slot ${ota_slot}"
    if load ${ota_devtype} ${ota_devnum}:${ota_part} ${kernel_addr_r} ${ota_kernel}; then
        setenv ota_fdt "${fdtcontroladdr}"
        if test -n "${ota_fdtfile}"; then
            if load ${ota_devtype} ${ota_devnum}:${ota_part} ${fdt_addr_r} ${ota_fdtfile}; then
                setenv ota_fdt "${fdt_addr_r}"
            fi
        fi
        setenv ota_rd -
        setenv ota_rd_addr 0
        setenv ota_rd_size 0
        if test -n "${ota_initrd}"; then
            if load ${ota_devtype} ${ota_devnum}:${ota_part} ${ramdisk_addr_r} ${ota_initrd}; then
                setenv ota_rd "${ramdisk_addr_r}:${filesize}"
                setenv ota_rd_addr "${ramdisk_addr_r}"
                setenv ota_rd_size "${filesize}"
            fi
        fi
        if test "${ota_bootcmd}" = "bootz"; then
            bootz ${kernel_addr_r} ${ota_rd} ${ota_fdt}
        elif test "${ota_bootcmd}" = "zboot"; then
            zboot ${kernel_addr_r} 0 ${ota_rd_addr} ${ota_rd_size}
        else
            booti ${kernel_addr_r} ${ota_rd} ${ota_fdt}
        fi
    fi
fi

echo "OTA: slot ${ota_boot} could not be booted"
