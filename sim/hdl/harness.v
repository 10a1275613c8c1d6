// Simulation harness of the accelerator (module rsaccel_top) for long runs.
//
// The clock and the host memory live here, in the HDL, so that no Python runs per cycle
// (DESIGN.md: a clock toggled from Python costs ~16x). cocotb stays at the edges: register
// accesses on s_axil, waiting for irq, bulk loads and dumps of the memory through files.
//
// Memory: MEM_WORDS words of AXI_DATA bits (zeros at first), an AXI4 subordinate on the accelerator's m_axi:
// INCR bursts of full-width beats, up to 4 reads and 4 writes outstanding, in order.
// Reads return their first beat `latency` cycles after the address is taken. `bw_num` and
// `bw_den` limit the bandwidth shared by reads and writes to bw_num / bw_den bytes per cycle
// (bw_num = 0: a beat per cycle on each channel). An access outside the memory, a burst that is
// not INCR of full-width beats, one that crosses a 4 KB boundary, or a WLAST on the wrong beat
// is answered DECERR (nothing written) and sets the sticky `fault` with its address.
//
// Files (plusargs): +mem_load=<file> is read with $readmemh on each rising edge of mem_load
// (words at the `@` word addresses the file gives); +mem_dump=<file> receives words
// [dump_first, dump_last] with $writememh on each rising edge of mem_dump.
`timescale 1ns/1ps

module rsaccel_harness(clk, rst, irq, mem_load, mem_dump, dump_first, dump_last, bw_num, bw_den,
    latency, fault, fault_addr, cycle,
    s_axil__awaddr, s_axil__awprot, s_axil__awvalid, s_axil__awready,
    s_axil__wdata, s_axil__wstrb, s_axil__wvalid, s_axil__wready,
    s_axil__bresp, s_axil__bvalid, s_axil__bready,
    s_axil__araddr, s_axil__arprot, s_axil__arvalid, s_axil__arready,
    s_axil__rdata, s_axil__rresp, s_axil__rvalid, s_axil__rready);
  parameter AXI_ADDR = 32;
  parameter AXI_DATA = 64;
  parameter AXI_ID = 4;
  parameter AXIL_ADDR = 12;
  parameter MEM_WORDS = 1 << 24;
  parameter HALF_PERIOD = 5;              // ns: 10 ns cycles, as the cocotb benches
  localparam BYTES = AXI_DATA / 8;
  localparam SHIFT = $clog2(BYTES);
  localparam DEPTH = 4;                   // outstanding bursts per direction
  localparam PW = $clog2(DEPTH) + 1;

  output reg clk;
  input rst;
  output irq;
  input mem_load, mem_dump;
  input [31:0] dump_first, dump_last;
  input [31:0] bw_num, bw_den;
  input [15:0] latency;
  output reg fault;
  output reg [AXI_ADDR-1:0] fault_addr;
  output reg [63:0] cycle;
  input [AXIL_ADDR-1:0] s_axil__awaddr, s_axil__araddr;
  input [2:0] s_axil__awprot, s_axil__arprot;
  input s_axil__awvalid, s_axil__wvalid, s_axil__bready, s_axil__arvalid, s_axil__rready;
  input [31:0] s_axil__wdata;
  input [3:0] s_axil__wstrb;
  output s_axil__awready, s_axil__wready, s_axil__bvalid, s_axil__arready, s_axil__rvalid;
  output [1:0] s_axil__bresp, s_axil__rresp;
  output [31:0] s_axil__rdata;

  initial clk = 1'b0;
  always #HALF_PERIOD clk = ~clk;

  // ---- the accelerator ------------------------------------------------------------------
  wire [AXI_ID-1:0] awid, arid;
  wire [AXI_ADDR-1:0] awaddr, araddr;
  wire [7:0] awlen, arlen;
  wire [2:0] awsize, arsize;
  wire [1:0] awburst, arburst;
  wire awvalid, wvalid, wlast, bready, arvalid, rready;
  wire [AXI_DATA-1:0] wdata;
  wire [BYTES-1:0] wstrb;
  wire awready, wready, bvalid, arready, rvalid, rlast;
  wire [AXI_ID-1:0] bid, rid;
  wire [1:0] bresp, rresp;
  wire [AXI_DATA-1:0] rdata;

  rsaccel_top dut(
    .clk(clk), .rst(rst), .irq(irq),
    .m_axi__awid(awid), .m_axi__awaddr(awaddr), .m_axi__awlen(awlen), .m_axi__awsize(awsize),
    .m_axi__awburst(awburst), .m_axi__awvalid(awvalid), .m_axi__awready(awready),
    .m_axi__wdata(wdata), .m_axi__wstrb(wstrb), .m_axi__wlast(wlast), .m_axi__wvalid(wvalid),
    .m_axi__wready(wready),
    .m_axi__bid(bid), .m_axi__bresp(bresp), .m_axi__bvalid(bvalid), .m_axi__bready(bready),
    .m_axi__arid(arid), .m_axi__araddr(araddr), .m_axi__arlen(arlen), .m_axi__arsize(arsize),
    .m_axi__arburst(arburst), .m_axi__arvalid(arvalid), .m_axi__arready(arready),
    .m_axi__rid(rid), .m_axi__rdata(rdata), .m_axi__rresp(rresp), .m_axi__rlast(rlast),
    .m_axi__rvalid(rvalid), .m_axi__rready(rready),
    .s_axil__awaddr(s_axil__awaddr), .s_axil__awprot(s_axil__awprot),
    .s_axil__awvalid(s_axil__awvalid), .s_axil__awready(s_axil__awready),
    .s_axil__wdata(s_axil__wdata), .s_axil__wstrb(s_axil__wstrb),
    .s_axil__wvalid(s_axil__wvalid), .s_axil__wready(s_axil__wready),
    .s_axil__bresp(s_axil__bresp), .s_axil__bvalid(s_axil__bvalid),
    .s_axil__bready(s_axil__bready),
    .s_axil__araddr(s_axil__araddr), .s_axil__arprot(s_axil__arprot),
    .s_axil__arvalid(s_axil__arvalid), .s_axil__arready(s_axil__arready),
    .s_axil__rdata(s_axil__rdata), .s_axil__rresp(s_axil__rresp),
    .s_axil__rvalid(s_axil__rvalid), .s_axil__rready(s_axil__rready));

  // ---- the memory and its files -----------------------------------------------------------
  reg [AXI_DATA-1:0] mem [0:MEM_WORDS-1];
  reg [8*1024-1:0] load_file, dump_file;

  integer k;
  initial begin
    for (k = 0; k < MEM_WORDS; k = k + 1) mem[k] = {AXI_DATA{1'b0}};    // as AxiRam: zeros
    if (!$value$plusargs("mem_load=%s", load_file)) load_file = "mem_load.hex";
    if (!$value$plusargs("mem_dump=%s", dump_file)) dump_file = "mem_dump.hex";
  end
  always @(posedge mem_load) $readmemh(load_file, mem);
  always @(posedge mem_dump) $writememh(dump_file, mem, dump_first, dump_last);

  // A burst is bad unless INCR, full width, inside the memory and inside one 4 KB page.
  function automatic bad_burst(input [AXI_ADDR-1:0] addr, input [7:0] len, input [2:0] size,
                               input [1:0] burst);
    reg [AXI_ADDR+8:0] last;
    begin
      last = {9'b0, addr} + (({{(AXI_ADDR+1){1'b0}}, len} + 1) << SHIFT) - 1;
      bad_burst = burst != 2'd1 || size != SHIFT || addr[SHIFT-1:0] != 0
                  || (last >> SHIFT) >= MEM_WORDS || (last >> 12) != ({9'b0, addr} >> 12);
    end
  endfunction

  // Bandwidth: credit in units of 1/bw_den byte; a beat costs BYTES * bw_den.
  wire unlimited = bw_num == 0;
  wire signed [33:0] cost = $signed({2'b0, bw_den}) * BYTES;
  reg signed [33:0] credit;
  wire credit_ok = unlimited || credit >= 0;

  // ---- reads ------------------------------------------------------------------------------
  reg [AXI_ADDR-SHIFT-1:0] ar_word [0:DEPTH-1];
  reg [7:0] ar_len [0:DEPTH-1];
  reg [AXI_ID-1:0] ar_id [0:DEPTH-1];
  reg ar_bad [0:DEPTH-1];
  reg [63:0] ar_time [0:DEPTH-1];
  reg [PW-1:0] ar_head, ar_tail;
  reg [7:0] r_beat;
  reg r_hold;                                   // rvalid shown and not yet taken: keep it
  wire [PW-1:0] ar_count = ar_tail - ar_head;
  wire [PW-2:0] rh = ar_head[PW-2:0];
  assign arready = ar_count != DEPTH;
  assign rvalid = ar_count != 0 && cycle >= ar_time[rh] && (credit_ok || r_hold);
  assign rdata = ar_bad[rh] ? {AXI_DATA{1'b0}} : mem[ar_word[rh] + {{(AXI_ADDR-SHIFT-8){1'b0}}, r_beat}];
  assign rresp = ar_bad[rh] ? 2'd3 : 2'd0;
  assign rid = ar_id[rh];
  assign rlast = r_beat == ar_len[rh];
  wire r_fire = rvalid && rready;

  // ---- writes -----------------------------------------------------------------------------
  reg [AXI_ADDR-SHIFT-1:0] aw_word [0:DEPTH-1];
  reg [7:0] aw_len [0:DEPTH-1];
  reg [AXI_ID-1:0] aw_id [0:DEPTH-1];
  reg aw_bad [0:DEPTH-1];
  reg [PW-1:0] aw_head, aw_tail, b_head, b_tail;
  reg [7:0] w_beat;
  reg [AXI_ID-1:0] b_id [0:DEPTH-1];
  reg [1:0] b_resp [0:DEPTH-1];
  wire [PW-1:0] aw_count = aw_tail - aw_head;
  wire [PW-1:0] b_count = b_tail - b_head;
  wire [PW-2:0] wh = aw_head[PW-2:0];
  assign awready = aw_count != DEPTH;
  assign wready = aw_count != 0 && b_count != DEPTH && credit_ok;
  assign bvalid = b_count != 0;
  assign bid = b_id[b_head[PW-2:0]];
  assign bresp = b_resp[b_head[PW-2:0]];
  wire w_fire = wvalid && wready;
  wire w_end = w_beat == aw_len[wh];
  wire [AXI_ADDR-SHIFT-1:0] w_addr = aw_word[wh] + {{(AXI_ADDR-SHIFT-8){1'b0}}, w_beat};

  wire signed [33:0] credit_next = credit + $signed({2'b0, bw_num})
                                   - (r_fire ? cost : 34'sd0) - (w_fire ? cost : 34'sd0);

  integer i;
  always @(posedge clk) begin
    cycle <= cycle + 1;
    if (rst) begin
      ar_head <= 0; ar_tail <= 0; r_beat <= 0; r_hold <= 0;
      aw_head <= 0; aw_tail <= 0; b_head <= 0; b_tail <= 0; w_beat <= 0;
      credit <= 0;
    end else begin
      if (!unlimited) credit <= credit_next > 2 * cost ? 2 * cost : credit_next;
      if (arvalid && arready) begin
        ar_word[ar_tail[PW-2:0]] <= araddr[AXI_ADDR-1:SHIFT];
        ar_len[ar_tail[PW-2:0]] <= arlen;
        ar_id[ar_tail[PW-2:0]] <= arid;
        ar_bad[ar_tail[PW-2:0]] <= bad_burst(araddr, arlen, arsize, arburst);
        ar_time[ar_tail[PW-2:0]] <= cycle + latency;
        ar_tail <= ar_tail + 1;
        if (bad_burst(araddr, arlen, arsize, arburst) && !fault) begin
          fault <= 1; fault_addr <= araddr;
        end
      end
      r_hold <= rvalid && !rready;
      if (r_fire) begin
        r_beat <= rlast ? 8'd0 : r_beat + 1;
        if (rlast) ar_head <= ar_head + 1;
      end
      if (awvalid && awready) begin
        aw_word[aw_tail[PW-2:0]] <= awaddr[AXI_ADDR-1:SHIFT];
        aw_len[aw_tail[PW-2:0]] <= awlen;
        aw_id[aw_tail[PW-2:0]] <= awid;
        aw_bad[aw_tail[PW-2:0]] <= bad_burst(awaddr, awlen, awsize, awburst);
        aw_tail <= aw_tail + 1;
        if (bad_burst(awaddr, awlen, awsize, awburst) && !fault) begin
          fault <= 1; fault_addr <= awaddr;
        end
      end
      if (w_fire) begin
        if (!aw_bad[wh])
          for (i = 0; i < BYTES; i = i + 1)
            if (wstrb[i]) mem[w_addr][8*i +: 8] <= wdata[8*i +: 8];
        if (wlast != w_end && !fault) begin
          fault <= 1; fault_addr <= {w_addr, {SHIFT{1'b0}}};
        end
        w_beat <= w_end ? 8'd0 : w_beat + 1;
        if (w_end) begin
          aw_head <= aw_head + 1;
          b_id[b_tail[PW-2:0]] <= aw_id[wh];
          b_resp[b_tail[PW-2:0]] <= aw_bad[wh] || wlast != w_end ? 2'd3 : 2'd0;
          b_tail <= b_tail + 1;
        end
      end
      if (bvalid && bready) b_head <= b_head + 1;
    end
  end

  initial begin
    cycle = 0;
    fault = 0;
    fault_addr = 0;
  end
endmodule
