#!/usr/bin/perl
# Rewrites a CUDA source for an emulated build (see README.md): reads the file named by the
# first argument, writes the result to standard output.
#
#   Kernel<T, 4><<<grid, block, smem, stream>>>(args)
#     -> ::cuda_emu::Launcher("Kernel<T, 4>", Kernel<T, 4>, grid, block, smem, stream)(args)
#   extern __shared__ __align__(16) unsigned char smem[];
#     -> unsigned char* smem = reinterpret_cast<unsigned char*>(::cuda_emu::DynamicSharedMemory());
#   __shared__ float s[32][4];
#     -> __shared__ float s[32][4]; ::cuda_emu::PoisonSharedOnce(&s, sizeof(s));
#
# A #line directive keeps compiler messages pointing at the original file.
use strict;
use warnings;

my $path = shift @ARGV or die "usage: rewrite_cuda_source.pl SOURCE > OUTPUT\n";
open(my $in, '<', $path) or die "rewrite_cuda_source.pl: cannot read $path: $!\n";
local $/;
my $src = <$in>;
close($in);

# ---- kernel launches ----
my $out = '';
my $pos = 0;
while ((my $open = index($src, '<<<', $pos)) >= 0) {
  my $close = index($src, '>>>', $open);
  die "$path: '<<<' without '>>>'\n" if $close < 0;
  # The kernel expression ends before '<<<': optional template arguments, then a name.
  my $end = $open;
  $end-- while $end > 0 && substr($src, $end - 1, 1) =~ /\s/;
  my $start = $end;
  if ($start > 0 && substr($src, $start - 1, 1) eq '>') {
    my $depth = 0;
    do {
      $start--;
      my $c = substr($src, $start, 1);
      $depth++ if $c eq '>';
      $depth-- if $c eq '<';
    } while ($depth > 0 && $start > 0);
  }
  $start-- while $start > 0 && substr($src, $start - 1, 1) =~ /[\w:]/;
  my $kernel = substr($src, $start, $end - $start);
  die "$path: cannot find the kernel before '<<<'\n" if $kernel !~ /\w/;
  my $config = substr($src, $open + 3, $close - $open - 3);
  (my $name = $kernel) =~ s/\s+/ /g;
  $name =~ s/"/\\"/g;
  $out .= substr($src, $pos, $start - $pos);
  $out .= "::cuda_emu::Launcher(\"$name\", $kernel, $config)";
  $pos = $close + 3;
}
$out .= substr($src, $pos);
$src = $out;

# ---- dynamic shared memory ----
$src =~ s{extern\s+__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s+)?([\w:\s]+?)\s+(\w+)\s*\[\s*\]\s*;}
         {$1* $2 = reinterpret_cast<$1*>(::cuda_emu::DynamicSharedMemory());}g;

# ---- static shared memory: poisoned when a block first reaches the declaration ----
$src =~ s{(^[ \t]*__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s+)?[\w:<>,\s]+?\s+(\w+)\s*(?:\[[^\];]*\]\s*)*;)}
         {$1 ::cuda_emu::PoisonSharedOnce(&$2, sizeof($2));}mg;

print "#line 1 \"$path\"\n";
print $src;
