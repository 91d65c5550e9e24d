"""RTP media, sans-I/O: packets and RTCP (`packet`), G.711 laws (`g711`), RFC 4733 digits
(`dtmf`), placement of packets on a recording's clock (`timeline`) and G.711 WAV files (`wav`)."""
