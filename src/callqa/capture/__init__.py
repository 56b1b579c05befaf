"""Passive capture: pcap files in, calls (SIP dialogs and RTP streams per direction) out."""
